"""Colour maps and the OpenCV legend for label maps (TensorBoard, demos, videos, docs figures).

One colour per class everywhere (:func:`palette`), one for ignored pixels that no class can have
(:data:`IGNORE_COLOUR`). Legend and overlay text are drawn with OpenCV (no matplotlib per video
frame) at a size that follows the picture's, readable on a 160x120 frame and a 1920x1080 one.
"""

import os
import sys
from typing import NamedTuple

import cv2
import numpy as np

# Ignored pixels (unlabeled, padding): white. Class channels are multiples of 32 up to 224, so no
# class gets it, and it is the farthest from all (black, used before, is 32 from class 63's).
IGNORE_COLOUR = (255, 255, 255)
IGNORE_NAME = "ignored"

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_SHARE = 0.03  # height of a capital letter, as a share of the picture's shorter side
MIN_TEXT_PIXELS = 8  # ... but never smaller than this (readable on 160x120 frames)
FONT_PIXELS_AT_SCALE_1 = 21  # cap height of FONT at fontScale 1, as drawn
LEGEND_ROWS = 8  # at most this many rows: the largest classes, the last row "+N more"
LEGEND_DIM = 0.35  # the picture under the legend is darkened to this, for contrast
LEGEND_WIDTH_SHARE = 0.5  # a legend never takes more than this share of the width
MAX_NAME_CHARS = 20
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def palette(n_classes):
    """A fixed, well-spread colour per class, the same in every figure, TensorBoard image and
    video: class ``i`` gets colour ``i + 1`` of PASCAL VOC's bit-interleaving scheme (0 is black).
    """
    codes = np.arange(1, n_classes + 1)
    colours = np.zeros((n_classes, 3), np.uint8)
    for bit in range(8):  # bits 3k, 3k+1, 3k+2 of the code are bit 7-k of red, green, blue
        for channel in range(3):
            lit = (codes >> (3 * bit + channel)) & 1
            colours[:, channel] |= (lit << (7 - bit)).astype(np.uint8)
    return colours


def colorize(label, n_classes, ignore_label=255):
    """HxW integer label map -> HxWx3 uint8 RGB image; ignored/unknown pixels in IGNORE_COLOUR."""
    label = np.asarray(label)
    table = np.vstack([palette(n_classes), IGNORE_COLOUR]).astype(np.uint8)  # last row: ignored
    if 0 <= ignore_label < n_classes:
        table[ignore_label] = IGNORE_COLOUR
    index = np.where((label >= 0) & (label < n_classes), label, n_classes)
    return table[index]


def display_available():
    """Whether a window can be opened: always on macOS/Windows, with X11/Wayland elsewhere."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class TextStyle(NamedTuple):
    """Font scale, stroke and spacing of overlay text, in pixels of the picture it is drawn on."""

    scale: float  # cv2 fontScale
    thickness: int
    text_height: int  # cap height in pixels
    margin: int  # from the picture's edge, and inside the legend box
    row: int  # distance between legend rows


def text_style(height, width):
    """The style for a ``height`` x ``width`` picture: text :data:`TEXT_SHARE` of its shorter side
    (from about 270 px up; smaller pictures keep :data:`MIN_TEXT_PIXELS`, legible)."""
    text_height = max(MIN_TEXT_PIXELS, round(TEXT_SHARE * min(height, width)))
    thickness = max(1, round(text_height / 12))
    margin = max(2, round(text_height * 0.5))
    return TextStyle(text_height / FONT_PIXELS_AT_SCALE_1, thickness, text_height, margin,
                     text_height + max(3, round(text_height * 0.6)))


def text_width(text, style):
    return cv2.getTextSize(text, FONT, style.scale, style.thickness)[0][0]


def put_outlined_text(image, text, origin, style, colour=WHITE):
    """``text`` with its baseline's left end at ``origin``, in ``colour`` on a black outline."""
    for ink, extra in ((BLACK, 2 * style.thickness), (colour, 0)):
        cv2.putText(image, text, origin, FONT, style.scale, ink, style.thickness + extra,
                    cv2.LINE_AA)
    return image


def fit_name(name, style, max_width):
    """``name`` shortened (ending in "..") so its drawn width is at most ``max_width``."""
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS - 2] + ".."
    while len(name) > 3 and text_width(name, style) > max_width:
        name = name[:-3] + ".."
    return name


def legend_entries(label_map, class_names, colours, max_rows=LEGEND_ROWS, ignore_label=None):
    """``[(name, colour)]`` of the classes in ``label_map``, largest area first, ``colours`` in the
    channel order of the picture the legend goes on. Beyond ``max_rows`` the last row is
    ``"+N more"`` (colour None); ``ignore_label`` pixels are one more entry, :data:`IGNORE_NAME`."""
    n_classes = len(class_names)
    flat = np.asarray(label_map).ravel()
    if flat.size and flat.min() < 0:  # not from a network or a dataset: drop what is no class
        flat = flat[flat >= 0]
    # One pass over the pixels (a 1920x1080 frame every frame): bincount of all values at once.
    every = np.bincount(flat, minlength=n_classes)
    counts = every[:n_classes]
    order = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-int(counts[i]), i))
    entries = [(class_names[i], tuple(int(c) for c in colours[i])) for i in order]
    if ignore_label is not None and 0 <= ignore_label < len(every) and every[ignore_label]:
        entries.append((IGNORE_NAME, IGNORE_COLOUR))
    if len(entries) > max_rows:
        hidden = len(entries) - (max_rows - 1)
        entries = entries[:max_rows - 1] + [(f"+{hidden} more", None)]
    return entries


def legend_layout(image_shape, entries, style, right=True, width_share=LEGEND_WIDTH_SHARE):
    """Where :func:`draw_legend` puts things: ``(box, [(swatch, text origin, name)])``, boxes as
    ``(x0, y0, x1, y1)`` (x1, y1 excluded), in the top-right (or top-left) corner; rows that do
    not fit the height are left out, names shortened to fit ``width_share`` of the width."""
    height, width = image_shape[:2]
    m, s = style.margin, style.text_height
    n_rows = min(len(entries), max(0, (height - 3 * m) // style.row))
    name_room = int(width * width_share) - 3 * m - s
    if n_rows == 0 or name_room < 3 * s:
        return None, []
    names = [fit_name(name, style, name_room) for name, _ in entries[:n_rows]]
    box_width = 3 * m + s + max(text_width(name, style) for name in names)
    box_height = 2 * m + n_rows * style.row - (style.row - s)
    x0 = width - m - box_width if right else m
    tops = [2 * m + k * style.row for k in range(n_rows)]
    rows = [((x0 + m, top, x0 + m + s, top + s), (x0 + 2 * m + s, top + s), name)
            for top, name in zip(tops, names)]
    return (x0, m, x0 + box_width, m + box_height), rows


def draw_legend(image, entries, style, right=True, width_share=LEGEND_WIDTH_SHARE):
    """Draw the legend of ``entries`` (from :func:`legend_entries`) on ``image`` in place: the
    picture under the box darkened, per class a swatch of exactly its colour (in a contrasting
    1-pixel frame) and its name in white. Returns the box, None when nothing fits."""
    box, rows = legend_layout(image.shape, entries, style, right, width_share)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    region = image[y0:y1, x0:x1]
    region[...] = (region * LEGEND_DIM).astype(image.dtype)
    for (swatch, origin, name), (_, colour) in zip(rows, entries):
        sx0, sy0, sx1, sy1 = swatch
        if colour is not None:
            cv2.rectangle(image, (sx0 - 1, sy0 - 1), (sx1, sy1), contrasting(colour), 1)
            image[sy0:sy1, sx0:sx1] = colour
        cv2.putText(image, name, origin, FONT, style.scale, WHITE, style.thickness, cv2.LINE_AA)
    return box


def contrasting(colour):
    """White next to a dark colour, black next to a light one (Rec. 601 luma; any channel order
    works well enough, the weights only decide near mid-grey)."""
    a, b, c = (float(v) for v in colour)
    return BLACK if 0.299 * a + 0.587 * b + 0.114 * c >= 128 else WHITE


PANEL_MIN_SIDE = 256  # pictures are enlarged by a whole factor until their shorter side is this
PANEL_GAP = 4  # pixels between pictures
PANEL_BACKGROUND = (40, 40, 40)
PANEL_LEGEND_ROWS = 12  # the panel's legend column has room for more rows than a frame's


def side_by_side(pictures, titles, entries, nearest):
    """One HxWx3 uint8 picture: ``pictures`` (equal sizes) in a row, titled, ``entries`` (from
    :func:`legend_entries`) in a legend column. Each is enlarged by the smallest whole factor that
    makes its shorter side :data:`PANEL_MIN_SIDE` or more: nearest neighbour where ``nearest[k]``
    (label maps keep their exact colours and blocky edges), else bilinear (photos)."""
    height, width = pictures[0].shape[:2]
    factor = max(1, -(-PANEL_MIN_SIDE // max(1, min(height, width))))
    height, width = height * factor, width * factor
    style = text_style(height, width)
    header = style.text_height + 2 * style.margin
    names = [name for name, _ in entries] or [""]
    legend_width = 4 * style.margin + style.text_height + max(
        [3 * style.text_height] + [text_width(fit_name(n, style, 10**6), style) for n in names])
    step = width + PANEL_GAP
    canvas = np.empty((header + height, len(pictures) * step + legend_width, 3), np.uint8)
    canvas[...] = PANEL_BACKGROUND
    for k, (picture, title, exact) in enumerate(zip(pictures, titles, nearest)):
        picture = np.ascontiguousarray(picture)
        if factor > 1:
            interpolation = cv2.INTER_NEAREST if exact else cv2.INTER_LINEAR
            picture = cv2.resize(picture, (width, height), interpolation=interpolation)
        canvas[header:, k * step:k * step + width] = picture
        cv2.putText(canvas, title, (k * step + style.margin, style.margin + style.text_height),
                    FONT, style.scale, WHITE, style.thickness, cv2.LINE_AA)
    draw_legend(canvas[header:, len(pictures) * step:], entries, style, right=False,
                width_share=1.0)
    return canvas
