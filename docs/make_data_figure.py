#!/usr/bin/env python
"""Draw docs/data.png: training images after augmentation beside their label maps.

    python -m docs.make_data_figure [--config config/toy.yaml] [--output docs/data.png]

(from the repository root, which makes ``libs`` importable).

The samples are exactly what train.py feeds the network (random rescale by one
of AUGMENTATION.SCALE_CHOICES or within SCALE_RANGE, mean-colour padding, crop,
flip), shown as pictures again (mean added back) over their label maps, in the
colours every other figure uses. Ignored pixels (unlabeled, the class borders,
the padding) are white, a colour no class has (``utils.visualize.IGNORE_COLOUR``);
each label map is framed so that white padding stands out from the page. The
title names the data set (the synthetic COCO-Stuff-format set for
``config/toy.yaml``) and the config it was drawn from.
"""

import sys

import click
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from libs.cli import command, config_option, one_line_errors
from libs.datasets import build_dataset, load_class_names, to_rgb_uint8
from libs.inference.figure import FIGURE_DPI, PANEL_INCHES
from libs.utils.atomic import save_figure
from libs.utils.config import load_config
from libs.utils.visualize import IGNORE_COLOUR, IGNORE_NAME, colorize, palette

LEGEND_INCHES = 0.6  # height of the legend strip under the panels
TITLE_INCHES = 0.35  # room for the title's second line


def scaling_words(augmentation):
    """The title's account of the rescale, from whichever of the two scale keys is set."""
    if augmentation.SCALE_CHOICES is not None:
        choices = ", ".join(f"{s:g}" for s in augmentation.SCALE_CHOICES)
        return f"random scaling by one of {choices}"
    low, high = augmentation.SCALE_RANGE
    return f"random scaling {low:g}-{high:g}"


def set_name(cfg, dataset):
    """What the title calls the data: the synthetic set, or the dataset class (CocoStuff164k ...)."""
    if cfg.DATASET.SYNTHETIC:
        return "Synthetic COCO-Stuff-format set"
    return type(dataset).__name__


def figure_title(cfg, dataset, split, config_path):
    source = f" ({config_path})" if config_path is not None else ""
    return (f"{set_name(cfg, dataset)}{source}: {split}ing batch after augmentation\n"
            f"{cfg.IMAGE.SIZE.TRAIN}px crops after {scaling_words(cfg.AUGMENTATION)}"
            f"{' and flips' if cfg.AUGMENTATION.FLIP else ''}; label maps below, "
            f"{IGNORE_NAME} pixels white")


def frame_axes(ax):
    """No ticks, a thin grey frame (white ignored padding would otherwise merge with the page)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("0.4")
        spine.set_linewidth(0.8)


def data_figure(cfg, n_samples, split="train", config_path=None):
    """A Figure with ``n_samples`` augmented training samples: images on top, labels below.

    ``config_path`` is named in the title when given.
    """
    dataset = build_dataset(cfg, split, augment=True)
    n_samples = min(n_samples, len(dataset))
    n_classes = cfg.DATASET.N_CLASSES
    names = load_class_names(cfg.DATASET.LABELS)
    figure = Figure(figsize=(max(n_samples * PANEL_INCHES * 0.7, 6.5),
                             2 * PANEL_INCHES * 0.7 + LEGEND_INCHES + TITLE_INCHES))
    for column in range(n_samples):
        image_id, image, label = dataset[column]
        top = figure.add_subplot(2, n_samples, column + 1)
        top.imshow(to_rgb_uint8(image, cfg.IMAGE.MEAN))
        top.set_title(image_id.rsplit("_", 1)[-1].lstrip("0") or "0", fontsize="small")
        bottom = figure.add_subplot(2, n_samples, n_samples + column + 1)
        bottom.imshow(colorize(label.numpy(), n_classes, cfg.DATASET.IGNORE_LABEL),
                      interpolation="nearest")
        top.set_axis_off()
        frame_axes(bottom)
    colours = palette(n_classes) / 255.0
    handles = [Patch(facecolor=colours[i], edgecolor="black", linewidth=0.5, label=names[i])
               for i in range(n_classes)]
    handles.append(Patch(facecolor=[c / 255.0 for c in IGNORE_COLOUR], edgecolor="black",
                         linewidth=0.5, label=IGNORE_NAME))
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9),
                  frameon=False, fontsize="small")
    figure.suptitle(figure_title(cfg, dataset, split, config_path), fontsize="medium")
    figure.tight_layout(rect=(0, LEGEND_INCHES / figure.get_size_inches()[1], 1, 1))
    return figure


@command()
@config_option(default="config/toy.yaml", help="YAML config of the dataset to draw.")
@click.option("-o", "--output", default="docs/data.png", show_default=True,
              type=click.Path(dir_okay=False), help="Figure file.")
@click.option("-n", "--n-samples", type=click.IntRange(min=1), default=None,
              help="Samples to draw  [default: one training batch, SOLVER.BATCH_SIZE.TRAIN]")
def main(config_path, output, n_samples):
    """Draw augmented training samples beside their label maps (docs/data.png)."""
    with one_line_errors(config_path):
        cfg = load_config(config_path)
        figure = data_figure(cfg, n_samples or cfg.SOLVER.BATCH_SIZE.TRAIN,
                             config_path=config_path)
        save_figure(figure, output, FIGURE_DPI)
    click.echo(f"figure: {output}")


if __name__ == "__main__":
    sys.exit(main())
