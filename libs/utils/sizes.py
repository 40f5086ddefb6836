"""Sizes of rescaled images: one rounding rule for every image-to-image resize.

Three things scale an image, with distinct names everywhere: ``scale_choices``/``scale_range``
(training augmentation, ``AUGMENTATION.SCALE_CHOICES``/``SCALE_RANGE``), ``msc_scales`` (the
multi-scale model's extra inputs, ``MODEL.MSC.SCALES``) and ``tta_scales`` (``eval.py --scales``);
the last two follow the network's logit grid (``libs/models/geometry.py``, corner-aligned).
Image-to-image resizes (augmentation, the demos' longer side) round a scaled side to the nearest
integer (Python's ``round``: ties to even), never below one pixel.
"""


def scaled_size(size, scale):
    """``(height, width)`` times ``scale``, each side rounded to the nearest integer (ties to
    even) and at least 1."""
    return tuple(max(1, int(round(side * scale))) for side in size)


def longer_side_size(height, width, longer_side):
    """``(height, width)`` scaled so that the longer side is ``longer_side``, aspect kept."""
    return scaled_size((height, width), longer_side / max(height, width))


def size_text(height, width):
    """``"640x480"``: every size this project prints is width x height, as image viewers,
    cameras and video files state it (arrays and configs hold height first)."""
    return f"{width}x{height}"
