"""The one-image demo's figure: the classes a label map holds, and a panel for each.

Presentation only: nothing here changes a segmentation. The figure is a bare
matplotlib :class:`~matplotlib.figure.Figure` unless the caller passes a pyplot
one, so drawing and saving never need a display. ``PANEL_INCHES`` and
``FIGURE_DPI`` are shared with the docs figures, so every picture the
repository draws has panels of one size.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..utils.visualize import colorize, palette

MASK_ALPHA = 0.55  # weight of the class colour over the image inside a class mask
OUTSIDE_MASK_BRIGHTNESS = 0.35  # pixels outside a class mask are darkened to this fraction
LEGEND_ROWS_PER_COLUMN = 14  # long legends wrap into more columns
PANEL_INCHES = 3.2  # side of one figure panel
FIGURE_DPI = 120
FIXED_PANELS = 3  # input, prediction, legend; the class panels follow


def class_shares(label_map, n_classes):
    """``[(class_id, share of pixels)]`` of the classes present, largest share first."""
    counts = np.bincount(np.asarray(label_map).ravel(), minlength=n_classes)[:n_classes]
    total = counts.sum()
    found = [(int(i), float(counts[i] / total)) for i in np.flatnonzero(counts)]
    return sorted(found, key=lambda item: (-item[1], item[0]))


def format_shares(shares, class_names):
    """One line per class: id, name and share in percent, the names in one column."""
    width = max((len(class_names[i]) for i, _ in shares), default=0)
    return "\n".join(f"  {i:>4}  {class_names[i]:<{width}}  {share * 100:6.2f}%"
                     for i, share in shares)


def mask_overlay(image_rgb, mask, colour):
    """The image with ``mask`` tinted in ``colour`` and everything else darkened."""
    image = image_rgb.astype(np.float32)
    tinted = (1 - MASK_ALPHA) * image + MASK_ALPHA * np.asarray(colour, np.float32)
    out = np.where(mask[..., None], tinted, OUTSIDE_MASK_BRIGHTNESS * image)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def panel_title(class_names, class_id, share):
    return f"{class_names[class_id]} ({share * 100:.1f}%)"


def panel_grid(n_panels):
    """``(rows, columns)`` for ``n_panels``: near-square, at least three columns."""
    n_cols = max(3, math.ceil(math.sqrt(n_panels)))
    return math.ceil(n_panels / n_cols), n_cols


def add_panel(figure, grid, index, title, picture=None):
    """Axes number ``index`` of the ``(rows, columns)`` grid, titled, without axis lines."""
    ax = figure.add_subplot(*grid, index + 1)
    ax.set_title(title, fontsize="medium")
    ax.set_axis_off()
    if picture is not None:
        ax.imshow(picture, interpolation="nearest")
    return ax


def draw_legend(ax, class_names, shares, colours):
    """A colour patch and the name of each class in ``shares``, in their order."""
    handles = [Patch(facecolor=colours[i] / 255.0, edgecolor="black", linewidth=0.5,
                     label=class_names[i]) for i, _ in shares]
    if handles:
        ax.legend(handles=handles, loc="upper left", frameon=False, fontsize="small",
                  ncol=math.ceil(len(handles) / LEGEND_ROWS_PER_COLUMN))


def build_figure(image_rgb, label_map, class_names, shares, figure=None):
    """The demo figure; returns it (a fresh :class:`Figure` unless ``figure`` is given).

    Panels in order: ``"input"``, ``"prediction"`` (the colour label map), the
    legend (titled ``"classes"``), then one per entry of ``shares`` titled
    ``"<name> (<share>%)"`` showing that class's mask over the image. Passing a
    pyplot figure lets the caller show it; a bare Figure needs no display.
    """
    n_classes = len(class_names)
    colours = palette(n_classes)
    grid = panel_grid(FIXED_PANELS + len(shares))
    if figure is None:
        figure = Figure()
    figure.set_size_inches(grid[1] * PANEL_INCHES, grid[0] * PANEL_INCHES)
    figure.set_dpi(FIGURE_DPI)

    add_panel(figure, grid, 0, "input", image_rgb)
    add_panel(figure, grid, 1, "prediction", colorize(label_map, n_classes))
    draw_legend(add_panel(figure, grid, 2, "classes"), class_names, shares, colours)
    for index, (class_id, share) in enumerate(shares, start=FIXED_PANELS):
        add_panel(figure, grid, index, panel_title(class_names, class_id, share),
                  mask_overlay(image_rgb, label_map == class_id, colours[class_id]))
    figure.tight_layout()
    return figure


def default_output_path(image_path):
    """``<image folder>/<image stem>_segmentation.png``."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + "_segmentation.png")
