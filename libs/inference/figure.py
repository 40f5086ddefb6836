"""The one-image demo's figure, the classes a label map holds, and the raw label map file.

The figure is a bare matplotlib :class:`~matplotlib.figure.Figure` unless the caller passes a
pyplot one, so drawing and saving never need a display. Sizes are in inches, so the pixel size is
bounded whatever the class count; a class has its ``palette`` colour everywhere.
"""

import math
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..utils.atomic import atomic_path, same_file
from ..utils.errors import OutputError
from ..utils.visualize import colorize, contrasting, palette

PANEL_INCHES = 3.2  # side of one panel in the docs figures
FIGURE_DPI = 120
TOP_K = 8  # default number of class panels
MIN_SHARE = 0.005  # default smallest share of the pixels that gets a panel
PANEL_COLUMNS = 4  # class panels per row; the input and the label map span two each
CLASS_PANEL_INCHES = 2.4  # width of one class panel
TOP_ROW_MAX_INCHES = 4.2  # the input and label map are at most this tall
MARGIN_INCHES = 0.15
GAP_INCHES = 0.15
TITLE_INCHES = 0.32  # room above each panel for its title
LEGEND_GAP_INCHES = 0.35
LEGEND_FONT_POINTS = 8
LEGEND_ROW_INCHES = 0.17  # first guess of one legend row's height; the legend is measured
MAX_LEGEND_COLUMNS = 3  # beyond this the figure grows taller instead of wider
MAX_NAME_CHARS = 22
BACKGROUND_BRIGHTNESS = 0.45  # outside the class mask the image is grey, dimmed to this
OUTLINE_PIXELS_PER_SIDE = 1 / 170  # outline width relative to the image's longer side


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


def panel_classes(shares, top_k=TOP_K, min_share=MIN_SHARE):
    """The entries of ``shares`` that get a panel: at most ``top_k``, each ``>= min_share``."""
    return [(i, share) for i, share in shares if share >= min_share][:max(0, top_k)]


def class_panel_picture(image_rgb, mask, colour):
    """The image in dimmed grey; ``mask`` in ``colour``, ringed by a contrasting outline."""
    image = np.asarray(image_rgb, np.float32)
    grey = image @ np.array([0.299, 0.587, 0.114], np.float32) * BACKGROUND_BRIGHTNESS
    out = np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
    mask = np.asarray(mask, bool)
    width = max(1, round(max(mask.shape) * OUTLINE_PIXELS_PER_SIDE))
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    out[ring] = contrasting(colour)
    out[mask] = colour
    return out


def legend_label(name, share):
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS - 1] + "\u2026"
    return f"{name}  {share * 100:.1f}%" if share >= 0.0005 else f"{name}  <0.1%"


def draw_legend(ax, class_names, shares, colours, rows_per_column):
    """A colour patch, the name and the share of each class in ``shares``, in their order."""
    handles = [Patch(facecolor=colours[i] / 255.0, edgecolor="black", linewidth=0.5,
                     label=legend_label(class_names[i], share)) for i, share in shares]
    if not handles:
        return None
    n_cols = min(MAX_LEGEND_COLUMNS, math.ceil(len(handles) / max(1, rows_per_column)))
    return ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 1), borderaxespad=0,
                     frameon=False, fontsize=LEGEND_FONT_POINTS, ncol=n_cols,
                     handlelength=1.4, columnspacing=1.2, labelspacing=0.35)


def panel_boxes(image_shape, n_panels):
    """Boxes ``(left, top, width, height)`` in inches of the input, label map and class panels,
    and the content's height (the figure's unless the legend needs more)."""
    height, width = image_shape[:2]
    aspect = min(2.0, max(0.5, height / max(1, width)))
    top_width = 2 * CLASS_PANEL_INCHES + GAP_INCHES
    top_height = min(top_width * aspect, TOP_ROW_MAX_INCHES)
    y = MARGIN_INCHES + TITLE_INCHES
    boxes = [(MARGIN_INCHES, y, top_width, top_height),
             (MARGIN_INCHES + top_width + GAP_INCHES, y, top_width, top_height)]
    y += top_height + GAP_INCHES
    cell_height = min(CLASS_PANEL_INCHES * aspect, 1.5 * CLASS_PANEL_INCHES)
    for index in range(n_panels):
        row, column = divmod(index, PANEL_COLUMNS)
        left = MARGIN_INCHES + column * (CLASS_PANEL_INCHES + GAP_INCHES)
        top = y + TITLE_INCHES + row * (TITLE_INCHES + cell_height + GAP_INCHES)
        boxes.append((left, top, CLASS_PANEL_INCHES, cell_height))
    bottom = max(top + h for _, top, _, h in boxes)
    return boxes, bottom + MARGIN_INCHES


def place(ax, box, figure_size):
    """Put ``ax`` at ``box`` (left, top, width, height in inches from the top-left corner)."""
    left, top, width, height = box
    fig_width, fig_height = figure_size
    ax.set_position([left / fig_width, 1 - (top + height) / fig_height,
                     width / fig_width, height / fig_height])


def add_panel(figure, title, picture=None):
    """A titled axes without axis lines, showing ``picture`` (placed later by :func:`place`)."""
    ax = figure.add_axes([0, 0, 1, 1])
    ax.set_title(title, fontsize="medium")
    ax.set_axis_off()
    if picture is not None:
        ax.imshow(picture, interpolation="nearest")
    return ax


def panel_title(class_names, class_id, share):
    return f"{class_names[class_id]} ({share * 100:.1f}%)"


def build_figure(image_rgb, label_map, class_names, shares, figure=None, panels=None):
    """The demo figure: ``figure`` (a pyplot one can be shown), else a bare :class:`Figure`.

    Axes in order: ``"input"``, ``"prediction"`` (the colour label map), the legend (titled
    ``"classes"``: every entry of ``shares``), then one panel titled ``"<name> (<share>%)"``
    for each entry of ``panels`` (default: :func:`panel_classes` of ``shares``).
    """
    n_classes = len(class_names)
    colours = palette(n_classes)
    panels = panel_classes(shares) if panels is None else panels
    boxes, content_height = panel_boxes(np.shape(label_map), len(panels))
    figure = Figure() if figure is None else figure
    figure.set_dpi(FIGURE_DPI)
    axes = [add_panel(figure, "input", image_rgb),
            add_panel(figure, "prediction", colorize(label_map, n_classes))]
    legend_ax = add_panel(figure, "classes")
    room = content_height - 2 * MARGIN_INCHES - TITLE_INCHES
    legend = draw_legend(legend_ax, class_names, shares, colours,
                         math.floor(room / LEGEND_ROW_INCHES))
    for class_id, share in panels:
        axes.append(add_panel(figure, panel_title(class_names, class_id, share),
                              class_panel_picture(image_rgb, label_map == class_id,
                                                  colours[class_id])))
    legend_width = legend_height = 0.0
    if legend is not None:
        extent = legend.get_window_extent(figure._get_renderer())
        legend_width, legend_height = extent.width / figure.dpi, extent.height / figure.dpi
    legend_left = max(left + width for left, _, width, _ in boxes) + LEGEND_GAP_INCHES
    size = (legend_left + max(legend_width, 0.8) + MARGIN_INCHES,
            max(content_height, legend_height + 2 * MARGIN_INCHES + TITLE_INCHES))
    size = tuple(math.ceil(inches * FIGURE_DPI) / FIGURE_DPI for inches in size)  # whole pixels
    figure.set_size_inches(*size)
    for ax, box in zip(axes, boxes):
        place(ax, box, size)
    place(legend_ax, (legend_left, MARGIN_INCHES + TITLE_INCHES, max(legend_width, 0.8),
                      max(legend_height, 0.01)), size)
    return figure


def default_output_path(image_path, folder="."):
    """``<folder>/<image stem>_segmentation.png`` (the current directory by default)."""
    return Path(folder) / (Path(image_path).stem + "_segmentation.png")


def refuse_overwrite(output, input_path, option):
    """:class:`OutputError` when ``output`` (given by ``option``) is the file ``input_path``."""
    if same_file(output, input_path):
        raise OutputError(f"{output}: {option} would overwrite the input image; "
                          "choose another path")


def check_label_path(path):
    if Path(path).suffix.lower() != ".png":
        raise OutputError(f"{path}: --save-label writes a PNG; give a path ending in .png")


def save_label_png(label_map, path, n_classes):
    """Write ``label_map`` as a one-channel PNG of class indices (8- or 16-bit), atomically."""
    check_label_path(path)
    label_map = np.asarray(label_map)
    dtype = np.uint8 if n_classes < 256 else np.uint16
    if label_map.size and (label_map.min() < 0 or label_map.max() > np.iinfo(dtype).max):
        raise ValueError(f"label values {label_map.min()}..{label_map.max()} "
                         f"do not fit {dtype.__name__}")
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), label_map.astype(dtype)):
            raise OutputError(f"{path}: OpenCV could not write this PNG")
    return Path(path)
