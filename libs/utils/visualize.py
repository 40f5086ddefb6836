"""Colour maps for label maps (TensorBoard, demos, docs figures)."""

import os
import sys

import numpy as np


def palette(n_classes):
    """A fixed, well-spread colour per class: the PASCAL VOC bit-interleaving scheme.

    Deterministic and the same everywhere, so a class has one colour in every
    figure, TensorBoard image and video the repository makes. Class ``i`` gets
    the scheme's colour ``i + 1``, keeping black for ignored pixels.
    """
    colours = np.zeros((n_classes, 3), np.uint8)
    for i in range(n_classes):
        c, r, g, b = i + 1, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def colorize(label, n_classes, ignore_label=255, ignore_colour=(0, 0, 0)):
    """HxW integer label map -> HxWx3 uint8 RGB image; ignored/unknown pixels in ``ignore_colour``."""
    label = np.asarray(label)
    out = np.empty(label.shape + (3,), np.uint8)
    out[...] = ignore_colour
    valid = (label >= 0) & (label < n_classes) & (label != ignore_label)
    out[valid] = palette(n_classes)[label[valid]]
    return out


def display_available():
    """Whether a window can be opened: always on macOS/Windows, with X11/Wayland elsewhere."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
