"""Build DeepLab v2's ``train_aug`` set from SBD and PASCAL VOC 2012 (``python -m libs.cli.sbd``).

Writes into ``VOC2012`` a grey ``SegmentationClassAug/<id>.png`` (255 = ignore) for every
``train_aug`` and VOC trainval id, and ``ImageSets/SegmentationAug/train_aug.txt``: (SBD train |
SBD val | VOC train) - VOC val. Where both label an id, VOC's official label wins (its 255 band
kept), as in the public recipes (docs/data.md). Images are not copied. Re-running is safe: equal
PNGs are left alone, files are written atomically (the list last), and a different existing PNG
or list is refused unless ``overwrite`` is set.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..utils.atomic import read_input, write_bytes
from ..utils.errors import DatasetError, OutputError
from .images import grey_png_bytes, integer_map, load_mat, read_id_list, read_label_png

N_CLASSES = 21  # background + 20 VOC classes
IGNORE = 255  # VOC's boundary / "difficult" value
SBD_LISTS = ("train.txt", "val.txt")
AUG_DIR = "SegmentationClassAug"


@dataclass
class SBDConversion:
    """What :func:`convert_sbd` did; ``n_written + n_unchanged == n_labels``."""

    label_dir: Path
    list_path: Path
    n_train_aug: int
    n_labels: int  # PNGs the set needs: train_aug ids and VOC trainval ids
    n_from_voc: int  # of which the official VOC label was used
    n_written: int
    n_unchanged: int
    list_written: bool  # False when an equal train_aug.txt was already there


def _resolve(root, child, probe):
    """``root``, or ``root / child`` when only that holds ``probe`` (its parent was given)."""
    root = Path(root)
    return root / child if not (root / probe).exists() and (root / child / probe).exists() else root


def _check_values(label, path):
    bad = ((label > N_CLASSES - 1) & (label != IGNORE)) | (label < 0)
    if bad.any():
        raise DatasetError(f"{path}: label {int(label[bad][0])} outside 0..{N_CLASSES - 1} "
                           f"and not the ignore value {IGNORE}")
    return label.astype(np.uint8)


def read_sbd_label(path):
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` as uint8 HxW (0..20)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: SBD annotation not found")
    gtcls = load_mat(path, "GTcls", "SBD annotation", squeeze_me=True, struct_as_record=False)
    if gtcls is None:
        raise DatasetError(f"{path}: no GTcls struct (is this a file of SBD's cls/ folder?)")
    label = getattr(gtcls, "Segmentation", None)
    label = None if label is None else np.asarray(label)
    if label is None or not integer_map(label):
        got = "nothing" if label is None else f"{label.dtype} of shape {label.shape}"
        raise DatasetError(f"{path}: GTcls.Segmentation must be a 2-D integer map, got {got}")
    return _check_values(label, path)


def _read_split(root, name, what):
    ids = read_id_list(root / name, what)
    for number, image_id in enumerate(ids, 1):
        if not re.fullmatch(r"[\w.-]+", image_id):
            raise DatasetError(f"{root / name}: line {number}: expected an image id, "
                               f"got {image_id!r}")
    return ids


def plan_train_aug(sbd_root, voc_root):
    """``(train_aug ids, {id: (label source path, is_voc)})``, after checking the lists and that
    ``JPEGImages`` holds every ``train_aug`` image; reads no label."""
    sbd = [i for name in SBD_LISTS for i in _read_split(sbd_root, name, "SBD image list")]
    voc_train, voc_val = (_read_split(voc_root / "ImageSets" / "Segmentation", name,
                                      "VOC split list") for name in ("train.txt", "val.txt"))
    train_aug = sorted((set(sbd) | set(voc_train)) - set(voc_val))
    for image_id in train_aug:
        image = voc_root / "JPEGImages" / f"{image_id}.jpg"
        if not image.is_file():
            raise DatasetError(f"{image}: image file not found (a train_aug id; SBD's copy is "
                               f"{sbd_root / 'img' / f'{image_id}.jpg'}, this converter does "
                               "not copy images)")
    official = set(voc_train) | set(voc_val)
    sources = {i: (voc_root / "SegmentationClass" / f"{i}.png", True) if i in official
               else (sbd_root / "cls" / f"{i}.mat", False)
               for i in sorted(set(train_aug) | official)}
    return train_aug, sources


def write_label_png(label, path, overwrite=False):
    """Write ``label`` as a grey PNG unless ``path`` holds the same labels; True if written. An
    existing file with other labels (or an unreadable one) is refused unless ``overwrite``."""
    data = grey_png_bytes(label)
    if path.exists():
        try:
            same = path.read_bytes() == data or np.array_equal(read_label_png(path), label)
        except DatasetError:
            if not overwrite:
                raise
            same = False
        if same:
            return False
        if not overwrite:
            raise OutputError(f"{path}: exists with different labels; delete it or overwrite "
                              f"it (--overwrite)")
    write_bytes(data, path)  # an OSError becomes a one-line OutputError
    return True


def convert_sbd(sbd_root, voc_root, overwrite=False, progress=False):
    """Write ``SegmentationClassAug/`` and ``train_aug.txt`` under ``voc_root`` (module doc);
    ``sbd_root`` is SBD's ``dataset`` folder (or its parent), ``voc_root`` ``VOC2012`` (or its)."""
    sbd_root = _resolve(sbd_root, "dataset", SBD_LISTS[0])
    voc_root = _resolve(voc_root, "VOC2012", "JPEGImages")
    train_aug, sources = plan_train_aug(sbd_root, voc_root)
    list_path = voc_root / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    lines = [f"/JPEGImages/{i}.jpg /{AUG_DIR}/{i}.png" for i in train_aug]  # DeepLab's format
    list_current = False  # an equal list (any order) stays; a different one is refused now
    if list_path.exists():
        text = read_input(list_path, "split list", DatasetError)
        found = [line.strip() for line in text.splitlines() if line.strip()]
        list_current = sorted(found) == sorted(lines)
        if not list_current and not overwrite:
            raise OutputError(f"{list_path}: exists with {len(found)} different lines (the "
                              f"converted list has {len(lines)}); move it away or overwrite it "
                              "(--overwrite)")
    label_dir = voc_root / AUG_DIR
    n_written = 0
    for image_id, (source, is_voc) in tqdm(sources.items(), desc=AUG_DIR, unit="label",
                                           disable=not progress, dynamic_ncols=True):
        label = _check_values(read_label_png(source), source) if is_voc else read_sbd_label(source)
        n_written += write_label_png(label, label_dir / f"{image_id}.png", overwrite)
    if not list_current:
        write_bytes("".join(f"{line}\n" for line in lines).encode(), list_path)
    return SBDConversion(
        label_dir=label_dir, list_path=list_path, n_train_aug=len(train_aug),
        n_labels=len(sources), n_from_voc=sum(is_voc for _, is_voc in sources.values()),
        n_written=n_written, n_unchanged=len(sources) - n_written, list_written=not list_current)
