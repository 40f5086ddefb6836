"""A small synthetic segmentation dataset in the COCO-Stuff 10k, VOC 2012 or folder layout.

Tests and first-time users need the whole pipeline without the 2 GB of COCO-Stuff. Every class
differs from the others in colour *and* texture or shape, so a tiny DeepLab learns them within
minutes on a CPU; a one-pixel band on each shape outline is unlabeled, for the ignore label. The
bytes are a function of the arguments alone (the quick start's scores depend on it). Layouts
and classes: docs/data.md, "The synthetic dataset".
"""

import io
import json
import os
import shutil
import tempfile
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from ..utils.atomic import remove_stale_temporaries, umask_mode
from ..utils.errors import DatasetError
from .images import grey_png_bytes, palette_png_bytes, voc_colour_map

# Class ids after COCO-Stuff's "-1" offset; names are in data/synthetic-labels.txt.
GRASS, WATER, SAND, BALL, CRATE, KITE, CLOUD, TILE = range(8)
BACKGROUND_CLASSES = (GRASS, WATER, SAND)
SHAPE_CLASSES = (BALL, CRATE, KITE, CLOUD, TILE)
# Base BGR colour of each class (by id); every image jitters it a little.
BASE_COLOUR_BGR = ((40, 140, 50), (170, 90, 30), (120, 180, 215), (40, 40, 215),
                   (30, 100, 170), (200, 50, 200), (240, 240, 240), (210, 200, 40))
# Each class's texture around its colour, by id: (x, y, phase, rng) -> HxW.
PATTERNS = (
    lambda x, y, p, rng: 25 * np.sin(2 * np.pi * x / 4 + p) + rng.normal(0, 8, x.shape),  # blades
    lambda x, y, p, rng: 22 * np.sin(2 * np.pi * y / 7 + 1.5 * np.sin(x / 5) + p),  # ripples
    lambda x, y, p, rng: rng.normal(0, 22, x.shape),  # coarse speckle
    lambda x, y, p, rng: 30 * np.sin(x / 9 + p) * np.cos(y / 9),  # smooth shading
    lambda x, y, p, rng: 35 * (((x // 5) + (y // 5)) % 2 * 2 - 1),  # checkerboard planks
    lambda x, y, p, rng: np.zeros_like(x),  # flat
    lambda x, y, p, rng: -20 * (np.sin(x / 6 + p) * np.sin(y / 6)) ** 2,  # soft blotches
    lambda x, y, p, rng: 35 * np.sign(np.sin(2 * np.pi * (x + y) / 8 + p)),  # diagonal stripes
)
COLOUR_JITTER = 15  # per-image, per-channel shift of a class colour
PIXEL_NOISE_STD = 5.0  # sensor-like noise over the whole image
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 90]
MAX_SHAPES = 4
SHAPE_SIZE_RANGE = (0.12, 0.28)  # shape radius as a fraction of the shorter image side
MARKER_FILE = "synthetic.json"  # records the generator's parameters inside ROOT
UNLABELED = 255  # the ignore value in the PNG layouts (VOC's boundary value)
# Layout: (ids drawn below, train id prefix, test id prefix, digits); the first, the original
# one, is the only one whose marker file has no "layout" key.
LAYOUTS = {"cocostuff10k": (600_000, "COCO_train2014_", "COCO_val2014_", 12),
           "voc12": (1_000_000, "2008_", "2008_", 6), "folder": (1_000_000, "img_", "img_", 6)}
DEFAULT_LAYOUT = "cocostuff10k"
# How many images of what size: what synthetic.json records besides the seed and layout.
Sizes = namedtuple("Sizes", "n_train n_test height width")

# scipy writes the wall-clock time into the MAT header; a fixed one keeps the bytes the same.
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, written by libs.datasets.synthetic".ljust(116)


def _texture(class_id, height, width, rng):
    """A float32 HxWx3 BGR texture of the class, covering the whole canvas."""
    colour = np.array(BASE_COLOUR_BGR[class_id], np.float32)
    colour = colour + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3).astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pattern = PATTERNS[class_id](x, y, rng.uniform(0, 2 * np.pi), rng)
    return colour[None, None, :] + pattern.astype(np.float32)[:, :, None]


def _shape_mask(class_id, height, width, rng):
    """A bool mask of one shape of the class at a random place and size."""
    mask = np.zeros((height, width), np.uint8)
    r = max(int(round(min(height, width) * rng.uniform(*SHAPE_SIZE_RANGE))), 3)
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    if class_id == BALL:
        cv2.circle(mask, (cx, cy), r, 1, thickness=-1)
    elif class_id == KITE:  # upward triangle
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    elif class_id == CLOUD:  # wide ellipse
        cv2.ellipse(mask, (cx, cy), (int(1.6 * r), max(r // 2, 2)), 0, 0, 360, 1, -1)
    else:  # CRATE: a square, TILE: a tall rectangle
        half = r if class_id == CRATE else r // 2
        cv2.rectangle(mask, (cx - half, cy - r), (cx + half, cy + r), 1, thickness=-1)
    return mask.astype(bool)


def make_sample(height, width, rng):
    """One ``(image uint8 HxWx3 BGR, S uint8 HxW)`` pair; S is 0 (unlabeled) or class + 1."""
    first, second = rng.choice(BACKGROUND_CLASSES, size=2, replace=False)
    classes = np.full((height, width), first, np.int64)
    image = _texture(first, height, width, rng)
    if rng.random() < 0.5:  # a wavy horizon with a second background below it
        x = np.arange(width)
        horizon = height * rng.uniform(0.35, 0.65) + 4 * np.sin(x / rng.uniform(6, 14))
        below = np.arange(height)[:, None] > horizon[None, :]
        classes[below] = second
        image[below] = _texture(second, height, width, rng)[below]
    outline = np.zeros((height, width), np.uint8)
    for class_id in rng.choice(SHAPE_CLASSES, size=int(rng.integers(1, MAX_SHAPES + 1))):
        mask = _shape_mask(int(class_id), height, width, rng)
        classes[mask] = class_id
        image[mask] = _texture(int(class_id), height, width, rng)[mask]
        outline[mask] = 0  # a later shape hides the outlines it covers
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(outline, contours, -1, 1, thickness=1)
    image += rng.normal(0, PIXEL_NOISE_STD, image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, np.where(outline.astype(bool), 0, classes + 1).astype(np.uint8)


def _sample_files(layout, image_id, image, s):
    """``{relative path: bytes}`` of one sample in ``layout``."""
    jpeg = cv2.imencode(".jpg", image, JPEG_PARAMS)[1].tobytes()
    if layout == DEFAULT_LAYOUT:
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"S": s}, do_compression=True)
        mat = _MAT_HEADER + buffer.getvalue()[len(_MAT_HEADER):]
        return {f"images/{image_id}.jpg": jpeg, f"annotations/{image_id}.mat": mat}
    label = np.where(s == 0, UNLABELED, s.astype(np.int64) - 1)
    if layout == "folder":
        return {f"images/{image_id}.jpg": jpeg, f"labels/{image_id}.png": grey_png_bytes(label)}
    return {f"JPEGImages/{image_id}.jpg": jpeg,
            f"SegmentationClass/{image_id}.png": palette_png_bytes(label, voc_colour_map()),
            f"SegmentationClassAug/{image_id}.png": grey_png_bytes(label)}


def _split_lists(layout, train, test):
    """``{relative path: ids}``: train, the held-out split and both (VOC: + train_aug)."""
    both = sorted(train + test)
    if layout == DEFAULT_LAYOUT:
        return {"imageLists/train.txt": train, "imageLists/test.txt": test,
                "imageLists/all.txt": both}
    if layout == "folder":  # held-out ids go to val, as in config/folder_example.yaml (and VOC)
        return {"lists/train.txt": train, "lists/val.txt": test, "lists/all.txt": both}
    sets = "ImageSets/Segmentation/"
    return {sets + "train.txt": train, sets + "val.txt": test, sets + "trainval.txt": both,
            "ImageSets/SegmentationAug/train_aug.txt":
                [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in train]}


def _write_layout(root, layout, sizes, seed):
    """All files of the set into ``root``."""
    count, train_prefix, test_prefix, digits = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    numbers = rng.choice(count, size=sizes.n_train + sizes.n_test, replace=False)
    train = [f"{train_prefix}{n:0{digits}d}" for n in sorted(numbers[: sizes.n_train])]
    test = [f"{test_prefix}{n:0{digits}d}" for n in sorted(numbers[sizes.n_train :])]
    files = {}
    for image_id in train + test:
        files.update(_sample_files(layout, image_id, *make_sample(sizes.height, sizes.width, rng)))
    for name, ids in _split_lists(layout, train, test).items():
        files[name] = "".join(f"{i}\n" for i in ids).encode()
    marker = dict(sizes._asdict(), seed=seed)
    if layout != DEFAULT_LAYOUT:
        marker["layout"] = layout
    files[MARKER_FILE] = (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode()
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def generate_synthetic(root, sizes, seed, layout=DEFAULT_LAYOUT, force=False):
    """Write the synthetic dataset of ``sizes`` (:data:`Sizes`) to ``root`` (absent or empty),
    through a sibling temporary directory renamed once complete, so an interrupted run never
    leaves a half-written set. ``force`` replaces an existing synthetic set (one holding
    ``synthetic.json``), and only such a set: any other folder is never touched."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise DatasetError(f"{root}: unknown synthetic layout {layout!r}; "
                           f"choose one of {tuple(LAYOUTS)}")
    replace = root.exists() and not (root.is_dir() and not any(root.iterdir()))  # not empty
    synthetic = replace and root.is_dir() and (root / MARKER_FILE).is_file()
    if replace and not (force and synthetic):
        hint = ("add --force to replace it" if synthetic else "choose another --root "
                "(it holds no synthetic.json, so --force will not touch it)")
        raise DatasetError(f"{root}: already exists and is not empty; {hint}")
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root.parent)  # what a killed generation left (.<name>.tmp-*)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    staging.chmod(umask_mode(directory=True))  # mkdtemp's 0o700 would survive the rename
    try:
        _write_layout(staging, layout, sizes, seed)
        if replace:  # the old set moves aside only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
            os.replace(staging, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, root)  # replaces an empty directory, fails on a non-empty one
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
