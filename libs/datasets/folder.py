"""A dataset of your own: ``images/``, ``labels/`` and ``lists/<split>.txt`` under ROOT.

Layout (``DATASET.NAME: folder``)::

    ROOT/images/<id>.jpg          # or .jpeg / .png / .bmp, any size
    ROOT/labels/<id>.png          # one channel: class index per pixel, IGNORE_LABEL = unlabeled
    ROOT/lists/<split>.txt        # one id a line (an id may contain sub-folders: "a/b")

Any number of classes: the names come from ``DATASET.LABELS``, the count from
``DATASET.N_CLASSES``; a label outside ``0..N_CLASSES-1`` that is not the ignore
value is a bad file. Label PNGs may be greyscale (8 or 16 bit) or palette PNGs:
a palette PNG is read by its *indices*, never by its colours, because a palette
image that shows class 3 in red stores 3, and red would be a meaningless number.

Why the palette trick below: OpenCV (libpng) always expands a palette to colours.
Replacing the palette with the identity ramp (entry ``i`` is the grey ``(i, i, i)``)
before decoding makes every decoded colour equal to its index, so libpng still does
the decompression, filtering and interlacing, and no second PNG library is needed.
"""

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from ..utils.files import read_input
from .cocostuff import CocoStuffBase
from .errors import DatasetError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GREY, PNG_PALETTE = 0, 3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def png_chunks(data, path):
    """``[(type, payload)]`` of a PNG file's bytes; DatasetError naming ``path`` if malformed."""
    if not data.startswith(PNG_SIGNATURE):
        raise DatasetError(f"{path}: corrupt annotation (not a PNG file)")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise DatasetError(f"{path}: corrupt annotation (truncated PNG chunk {kind!r})")
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset = end
        if kind == b"IEND":
            return chunks
    raise DatasetError(f"{path}: corrupt annotation (truncated PNG: no IEND chunk)")


def _chunk(kind, payload):
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _grey_palette_png(chunks, bit_depth):
    """The PNG's bytes with its palette replaced by the identity grey ramp (no transparency)."""
    n = 1 << bit_depth
    ramp = bytes(np.repeat(np.arange(n, dtype=np.uint8), 3))
    out = [PNG_SIGNATURE]
    for kind, payload in chunks:
        if kind == b"PLTE":
            out.append(_chunk(b"PLTE", ramp))
        elif kind != b"tRNS":  # transparency would add an alpha channel; it is not a label
            out.append(_chunk(kind, payload))
    return b"".join(out)


def read_label_png(path):
    """A label PNG as int64 HxW: palette PNGs by index, greyscale PNGs by value.

    Raises DatasetError naming ``path`` for a missing, corrupt or colour (RGB) PNG.
    """
    path = Path(path)
    data = read_input(path, "annotation file", DatasetError, binary=True)
    chunks = png_chunks(data, path)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise DatasetError(f"{path}: corrupt annotation (PNG without a valid IHDR)")
    bit_depth, colour_type = chunks[0][1][8], chunks[0][1][9]
    if colour_type == PNG_PALETTE:
        data = _grey_palette_png(chunks, bit_depth)
    elif colour_type != PNG_GREY:
        raise DatasetError(
            f"{path}: label PNGs must be single-channel (greyscale or palette), "
            f"this one is colour type {colour_type}; store class indices, not colours"
        )
    label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"{path}: corrupt annotation (OpenCV cannot decode it)")
    if label.ndim == 3:  # the expanded grey ramp: every channel holds the index
        label = label[:, :, 0]
    return label.astype(np.int64)


def read_id_list(path, what="image list"):
    """Non-empty stripped lines of a split list; DatasetError naming it when missing/empty."""
    text = read_input(path, what, DatasetError)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{path}: {what} is empty")
    return lines


class FolderDataset(CocoStuffBase):
    """``images/<id>.*`` + ``labels/<id>.png`` listed by ``lists/<split>.txt`` (see module doc)."""

    def _list_ids(self):
        return read_id_list(self.root / "lists" / f"{self.split}.txt")

    def _image_path(self, image_id):
        """The first existing ``images/<id><suffix>``; the ``.jpg`` path when none exists,
        so the error names the file a user most likely meant."""
        for suffix in IMAGE_SUFFIXES:
            path = self.root / "images" / f"{image_id}{suffix}"
            if path.is_file():
                return path
        return self.root / "images" / f"{image_id}{IMAGE_SUFFIXES[0]}"

    def _paths(self, image_id):
        return self._image_path(image_id), self.root / "labels" / f"{image_id}.png"

    def _read_label(self, path):
        label = read_label_png(path)
        self._check_raw(label, path, unlabeled=(self.ignore_label,))
        return label
