"""Reading (and writing) the files of a dataset: images, label maps, id lists.

Every reader returns a plain array or raises :class:`DatasetError` with one line naming the
file, so the datasets, the demos and the converters report a bad file alike. Label PNGs are
read by palette *index*, never by colour: OpenCV expands a palette, so it is first swapped for
the identity grey ramp, and libpng still does the decoding.
"""

import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from ..utils.atomic import read_input
from ..utils.errors import DatasetError
from .transforms import mean_bgr_array

JPEG_SOI, JPEG_SOS, JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GREY, PNG_PALETTE = 0, 3


def read_image_bgr(path, background_bgr=None):
    """Decode an image file into HxWx3 uint8 BGR, or raise DatasetError naming it. OpenCV
    grey-fills a truncated JPEG silently, so a JPEG must end with its end marker. Alpha goes onto
    ``background_bgr`` (callers pass ``IMAGE.MEAN``: zero input, not the black that dropping
    alpha would give), else onto mid grey with a warning."""
    path = Path(path)
    data = read_input(path, "image file", DatasetError, binary=True)
    if data.startswith(JPEG_SOI) and data.rfind(JPEG_EOI) < data.rfind(JPEG_SOS):
        raise DatasetError(f"{path}: corrupt image (truncated JPEG: no end marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: corrupt image (OpenCV cannot decode it)")
    if image.ndim == 3 and image.shape[2] in (2, 4) and background_bgr is None:
        warnings.warn(f"{path}: transparent pixels composited onto mid grey", stacklevel=2)
        background_bgr = (127.5, 127.5, 127.5)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 2:  # grey + alpha
        image = np.dstack([image[..., 0]] * 3 + [image[..., 1]])
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        background = mean_bgr_array(background_bgr).reshape(1, 1, 3)
        blended = image[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return image[..., :3]


def integer_map(label):
    """Whether ``label`` is a 2-D map of whole numbers (MATLAB often stores them as doubles)."""
    return label.ndim == 2 and (np.issubdtype(label.dtype, np.integer) or (
        np.issubdtype(label.dtype, np.floating) and np.array_equal(label, np.round(label))))


def load_mat(path, key, what, **options):
    """The variable ``key`` (None if absent) of an existing MATLAB v5 file ``path``."""
    try:
        mat = scipy.io.loadmat(str(path), variable_names=[key], **options)
    except NotImplementedError:  # scipy's answer to HDF5-based v7.3 files
        raise DatasetError(f"{path}: MATLAB v7.3 files are not supported; re-save it with -v7"
                           ) from None
    except Exception as e:  # scipy raises many types for damaged files
        message = " ".join(f"{type(e).__name__}: {e}".split())
        raise DatasetError(f"{path}: corrupt {what} ({message})") from None
    return mat.get(key)


def read_mat_label(path, key="S"):
    """The raw label map under ``key`` of a MATLAB file (COCO-Stuff 10k annotations)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: annotation file not found")
    label = load_mat(path, key, "annotation")
    if label is None:
        raise DatasetError(f"{path}: annotation has no key {key!r}")
    label = np.asarray(label)
    if not integer_map(label):
        raise DatasetError(f"{path}: key {key!r} must be a 2-D integer label map, "
                           f"got {label.dtype} of shape {label.shape}")
    return label.astype(np.int64)


def _png_chunks(data, path):
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


def png_chunk(kind, payload):
    """One PNG chunk: length, type, payload, CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def read_label_png(path):
    """A label PNG as int64 HxW: palette PNGs by index, greyscale PNGs by value (not RGB)."""
    path = Path(path)
    data = read_input(path, "annotation file", DatasetError, binary=True)
    chunks = _png_chunks(data, path)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise DatasetError(f"{path}: corrupt annotation (PNG without a valid IHDR)")
    bit_depth, colour_type = chunks[0][1][8], chunks[0][1][9]
    if colour_type == PNG_PALETTE:  # the identity ramp, and no tRNS (it would add alpha)
        ramp = bytes(np.repeat(np.arange(1 << bit_depth, dtype=np.uint8), 3))
        data = PNG_SIGNATURE + b"".join(png_chunk(kind, ramp if kind == b"PLTE" else payload)
                                        for kind, payload in chunks if kind != b"tRNS")
    elif colour_type != PNG_GREY:
        raise DatasetError(f"{path}: label PNGs must be single-channel (greyscale or palette), "
                           f"this one is colour type {colour_type}; store class indices, "
                           "not colours")
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


def grey_png_bytes(indices):
    """A single-channel 8-bit PNG of a uint8 index map (SBD's and the folder layout)."""
    return cv2.imencode(".png", indices.astype(np.uint8))[1].tobytes()


def voc_colour_map(n=256):
    """VOC's palette (``bitget`` construction of its devkit): entry i is class i's RGB, bit
    3j + k of i becoming bit 7 - j of channel k."""
    j = np.arange(8)[:, None, None]
    bits = np.arange(n)[:, None] >> (3 * j + np.arange(3)) & 1  # [j, i, k]
    return (bits << (7 - j)).sum(axis=0).astype(np.uint8)


def palette_png_bytes(indices, palette):
    """An 8-bit palette PNG (VOC's ``SegmentationClass`` format) of a uint8 index map, written
    by hand with zlib so the test data does not come from the decoder it tests."""
    height, width = indices.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), indices.astype(np.uint8)], axis=1)
    return PNG_SIGNATURE + b"".join([
        png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)),
        png_chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes()),
        png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)),
        png_chunk(b"IEND", b""),
    ])
