#!/usr/bin/env python
"""Draw the demo figure for a busy scene: 26 classes of COCO-Stuff's 182, of very unequal area.

    python -m docs.make_busy_figure --output busy.png

No model is involved: the "prediction" is a random Voronoi map, so the figure's layout (top-k
panels, the legend column, the printed shares) can be judged at a class count that real photos
reach. docs/figures/demo_busy_{before,after}.jpg were made with it (before: the figure code of
commit 6318da0; after: this one), scaled down.
"""

import sys

import click
import numpy as np

from libs.cli import command
from libs.datasets import load_class_names
from libs.inference.figure import FIGURE_DPI, build_figure, class_shares
from libs.utils.atomic import save_figure

N_CLASSES, HEIGHT, WIDTH = 182, 480, 640


def busy_scene(seed=3, n_regions=60, n_labels=40):
    """A textured 640x480 RGB picture and its label map of Voronoi regions (about 26 classes)."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, [HEIGHT, WIDTH], size=(n_regions, 2))
    ids = rng.choice(N_CLASSES, size=n_labels, replace=False)
    owner = rng.integers(0, n_labels, size=n_regions)
    owner[:5] = 0  # one class owns several regions: the areas are unequal
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    distance = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    label = ids[owner[distance.argmin(-1)]].astype(np.int64)
    tint = np.stack([label * 37 % 200, label * 71 % 200, label * 13 % 200], -1)
    picture = (rng.random((HEIGHT, WIDTH, 3)) * 60 + tint).clip(0, 255).astype(np.uint8)
    return picture, label


@command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Figure file (.png, .jpg, .pdf, .svg).")
def main(output):
    """Draw the demo figure of a busy synthetic scene (layout check, no model)."""
    picture, label = busy_scene()
    shares = class_shares(label, N_CLASSES)
    figure = build_figure(picture, label, load_class_names("data/cocostuff-labels.txt"), shares)
    save_figure(figure, output, FIGURE_DPI)
    click.echo(f"{output}: {len(shares)} classes")


if __name__ == "__main__":
    sys.exit(main())
