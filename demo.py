#!/usr/bin/env python
"""Segment one image and draw the result (see docs/demo.md).

    python demo.py --config config/cocostuff.yaml --model-path PATH --image-path IMAGE [--crf]

The image is resized so that its longer side is ``IMAGE.SIZE.DEMO`` (aspect
kept), segmented, optionally refined by the dense CRF, and drawn as one figure:
the input, the colour label map, a legend of the classes found, and one panel
per class with its mask over the image. The classes and their share of the
pixels are printed. The figure is saved (``--output``) and shown when a display
exists; nothing here ever needs one.
"""

import math
import sys
from pathlib import Path

import click
import matplotlib
import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from libs.datasets import DatasetError, load_checked_class_names
from libs.datasets.cocostuff import read_image_bgr
from libs.utils.atomic import atomic_path
from libs.models.weights import CheckpointError
from libs.utils.config import ConfigError, load_config
from libs.inference.crf import DenseCRF
from libs.inference.predict import load_model, resize_longer_side, segment
from libs.utils.device import choose_device
from libs.utils.visualize import colorize, display_available, palette

# Presentation only (no effect on the segmentation).
MASK_ALPHA = 0.55  # weight of the class colour over the image inside a class mask
OUTSIDE_MASK_BRIGHTNESS = 0.35  # pixels outside a class mask are darkened to this fraction
LEGEND_ROWS_PER_COLUMN = 14  # long legends wrap into more columns
PANEL_INCHES = 3.2  # side of one figure panel
FIGURE_DPI = 120


class DemoError(ValueError):
    """An input the demo cannot use; the message names the file and the problem."""


# ------------------------------------------------------------------ model and image


def class_shares(label_map, n_classes):
    """``[(class_id, share of pixels)]`` of the classes present, largest share first."""
    counts = np.bincount(np.asarray(label_map).ravel(), minlength=n_classes)[:n_classes]
    total = counts.sum()
    found = [(int(i), float(counts[i] / total)) for i in np.flatnonzero(counts)]
    return sorted(found, key=lambda item: (-item[1], item[0]))


def format_shares(shares, class_names):
    width = max((len(class_names[i]) for i, _ in shares), default=0)
    return "\n".join(f"  {i:>4}  {class_names[i]:<{width}}  {share * 100:6.2f}%"
                     for i, share in shares)


# ------------------------------------------------------------------ figure


def mask_overlay(image_rgb, mask, colour):
    """The image with ``mask`` tinted in ``colour`` and everything else darkened."""
    image = image_rgb.astype(np.float32)
    tinted = (1 - MASK_ALPHA) * image + MASK_ALPHA * np.asarray(colour, np.float32)
    out = np.where(mask[..., None], tinted, OUTSIDE_MASK_BRIGHTNESS * image)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def panel_title(class_names, class_id, share):
    return f"{class_names[class_id]} ({share * 100:.1f}%)"


def build_figure(image_rgb, label_map, class_names, shares, figure=None):
    """The demo figure; returns it (a fresh :class:`Figure` unless ``figure`` is given).

    Panels in order: ``"input"``, ``"prediction"`` (the colour label map), the
    legend (titled ``"classes"``), then one per entry of ``shares`` titled
    ``"<name> (<share>%)"`` showing that class's mask over the image. Passing a
    pyplot figure lets the caller show it; a bare Figure needs no display.
    """
    n_classes = len(class_names)
    colours = palette(n_classes)
    n_panels = 3 + len(shares)
    n_cols = max(3, math.ceil(math.sqrt(n_panels)))
    n_rows = math.ceil(n_panels / n_cols)
    if figure is None:
        figure = Figure()
    figure.set_size_inches(n_cols * PANEL_INCHES, n_rows * PANEL_INCHES)
    figure.set_dpi(FIGURE_DPI)

    def panel(index, title, picture=None):
        ax = figure.add_subplot(n_rows, n_cols, index + 1)
        ax.set_title(title, fontsize="medium")
        ax.set_axis_off()
        if picture is not None:
            ax.imshow(picture, interpolation="nearest")
        return ax

    panel(0, "input", image_rgb)
    panel(1, "prediction", colorize(label_map, n_classes))
    legend_ax = panel(2, "classes")
    handles = [Patch(facecolor=colours[i] / 255.0, edgecolor="black", linewidth=0.5,
                     label=class_names[i]) for i, _ in shares]
    if handles:
        legend_ax.legend(handles=handles, loc="upper left", frameon=False, fontsize="small",
                         ncol=math.ceil(len(handles) / LEGEND_ROWS_PER_COLUMN))
    for index, (class_id, share) in enumerate(shares, start=3):
        panel(index, panel_title(class_names, class_id, share),
              mask_overlay(image_rgb, label_map == class_id, colours[class_id]))
    figure.tight_layout()
    return figure


def figure_format(path):
    """The matplotlib format named by ``path``'s suffix, or :class:`DemoError`."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise DemoError(f"{path}: unsupported figure format {path.suffix!r}; "
                        f"use one of {', '.join('.' + k for k in sorted(supported))}")
    return fmt


def save_figure_atomic(figure, path):
    """Write ``figure`` to ``path`` atomically; the format follows the suffix."""
    fmt = figure_format(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=FIGURE_DPI)
    return Path(path)


def default_output_path(image_path):
    """``<image folder>/<image stem>_segmentation.png``."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + "_segmentation.png")


# ------------------------------------------------------------------ command line


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config, e.g. config/cocostuff.yaml.")
@click.option("-m", "--model-path", required=True, type=click.Path(dir_okay=False),
              help="Weights: a converted Caffe model or a train.py checkpoint.")
@click.option("-i", "--image-path", required=True, type=click.Path(dir_okay=False),
              help="Image to segment (any format OpenCV reads).")
@click.option("--crf/--no-crf", default=False, show_default=True,
              help="Refine with the dense CRF of the config's CRF section.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Figure file (.png, .pdf, .svg, ...)  "
                   "[default: <image folder>/<image stem>_segmentation.png]")
@click.option("--cuda/--no-cuda", default=None,
              help="Run the model on the GPU  [default: when CUDA is available]")
@click.option("--show/--no-show", default=None,
              help="Also open the figure in a window  [default: when a display exists]")
def main(config_path, model_path, image_path, crf, output, cuda, show):
    """Segment one image: print the classes found and save (and show) a figure."""
    if show and not display_available():
        raise click.ClickException("--show: no display available (DISPLAY is not set); "
                                   "use --no-show, the figure is saved to --output")
    show = display_available() if show is None else show
    output = Path(output) if output else default_output_path(image_path)
    try:
        figure_format(output)  # before the slow part
        cfg = load_config(config_path)
        class_names = load_checked_class_names(cfg)
        image_bgr = resize_longer_side(read_image_bgr(image_path), cfg.IMAGE.SIZE.DEMO)
        device = choose_device(cuda)
        model = load_model(cfg, model_path, device)
        dense_crf = DenseCRF.from_config(cfg.CRF) if crf else None
        _, label_map = segment(model, image_bgr, cfg, device, crf=dense_crf)
        shares = class_shares(label_map, cfg.DATASET.N_CLASSES)
        height, width = label_map.shape
        click.echo(f"{image_path} ({height}x{width}{', CRF' if crf else ''}): "
                   f"{len(shares)} classes found (id, name, share of pixels)")
        click.echo(format_shares(shares, class_names))

        figure = None
        if show:
            import matplotlib.pyplot as plt  # only now: importing pyplot picks a GUI backend

            figure = plt.figure()
        figure = build_figure(image_bgr[:, :, ::-1], label_map, class_names, shares, figure)
        save_figure_atomic(figure, output)
        click.echo(f"figure: {output}")
    except (ConfigError, DatasetError, CheckpointError, DemoError) as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:  # e.g. an unknown MODEL.NAME
        raise click.ClickException(f"{config_path}: {e}") from None
    if show:
        plt.show()


if __name__ == "__main__":
    if not display_available():
        matplotlib.use("Agg")
    sys.exit(main())
