"""Datasets for the scripts: ``build_dataset(cfg, split, augment)`` is the entry point."""

import json
from pathlib import Path

from ..utils.atomic import read_input
from .cocostuff import CocoStuff10k, CocoStuff164k
from ..utils.errors import DatasetError
from .folder import FolderDataset
from .synthetic import DEFAULT_LAYOUT, LAYOUTS, MARKER_FILE, Sizes, generate_synthetic
from .transforms import Transform, resize_labels_torch, to_rgb_uint8  # the last two: docs/data.md
from .voc import VOC12

# Every reader takes the same arguments (SegmentationDataset's); DATASET.NAME picks one.
DATASETS = {"cocostuff10k": CocoStuff10k, "cocostuff164k": CocoStuff164k, "voc12": VOC12,
            "folder": FolderDataset}


def load_class_names(path):
    """Class names indexed by id from an ``id<TAB>name`` file (``DATASET.LABELS``); ids must run
    0..n-1 without gaps, so ``names[class_id]`` is always right."""
    path, names = Path(path), []
    lines = read_input(path, "class-name file", DatasetError).splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        class_id, sep, name = line.partition("\t")
        if not sep or not class_id.strip().isdigit() or not name.strip():
            raise DatasetError(f"{path}: line {number}: expected 'id<TAB>name', got {line!r}")
        if int(class_id) != len(names):
            raise DatasetError(f"{path}: line {number}: expected id {len(names)}, "
                               f"got {class_id.strip()}")
        names.append(name.strip())
    if not names:
        raise DatasetError(f"{path}: class-name file is empty")
    return names


def load_checked_class_names(cfg):
    """``DATASET.LABELS`` as a list, checked against ``DATASET.N_CLASSES``."""
    names = load_class_names(cfg.DATASET.LABELS)
    if len(names) != cfg.DATASET.N_CLASSES:
        raise DatasetError(f"{cfg.DATASET.LABELS}: {len(names)} class names but "
                           f"DATASET.N_CLASSES is {cfg.DATASET.N_CLASSES}")
    return names


def resolve_split(cfg, split):
    """``"train"``/``"test"`` mean ``DATASET.SPLIT.TRAIN/TEST``; other names (``"all"``,
    ``"val2017"``) are literal."""
    return cfg.DATASET.SPLIT[split.upper()] if split.upper() in ("TRAIN", "TEST") else split


def ensure_synthetic(dataset_cfg, seed):
    """Generate the set that the ``DATASET`` section asks for at its ROOT unless it is there
    (its marker records the same sizes and layout; not the seed, so changing ``EXP.SEED`` reuses
    the data). Returns the root, or None when ``DATASET.SYNTHETIC`` is null (real data)."""
    s = dataset_cfg.get("SYNTHETIC")
    if not s:
        return None
    root, sizes = Path(dataset_cfg.ROOT), Sizes(s.N_TRAIN, s.N_TEST, s.HEIGHT, s.WIDTH)
    wanted, marker = sizes._asdict(), root / MARKER_FILE
    name = dataset_cfg.get("NAME")
    wanted_layout = name if name in LAYOUTS else DEFAULT_LAYOUT
    if not marker.exists():
        if root.is_dir() and any(root.iterdir()):
            raise DatasetError(f"{root}: DATASET.SYNTHETIC is set but this non-empty directory "
                               f"holds no {MARKER_FILE}; point DATASET.ROOT elsewhere or empty it")
        try:
            generate_synthetic(root, sizes, seed, wanted_layout)
        except OSError:
            if not marker.exists():  # not a concurrent generator that won the rename
                raise
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{marker}: unreadable synthetic-dataset marker ({e})") from None
    layout = found.get("layout", DEFAULT_LAYOUT) if isinstance(found, dict) else None
    found = {k: found.get(k) for k in wanted} if isinstance(found, dict) else found
    if found != wanted or layout != wanted_layout:
        raise DatasetError(f"{marker}: the synthetic dataset at {root} was generated with {found} "
                           f"in the {layout} layout, but DATASET asks for {wanted} in the "
                           f"{wanted_layout} layout; delete {root} to regenerate it")
    return root


def build_dataset(cfg, split, augment):
    """The dataset ``cfg.DATASET.NAME`` for ``split`` (see :func:`resolve_split`), with the
    training augmentation to ``IMAGE.SIZE.TRAIN`` squares or the evaluation transform
    (:class:`~.transforms.Transform`); a synthetic dataset is generated on first use."""
    name = cfg.DATASET.NAME
    if name not in DATASETS:
        raise DatasetError(
            f"DATASET.NAME: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    ensure_synthetic(cfg.DATASET, cfg.EXP.SEED)
    class_names = load_checked_class_names(cfg)
    transform = Transform(
        ignore_label=cfg.DATASET.IGNORE_LABEL, crop_size=cfg.IMAGE.SIZE.TRAIN, seed=cfg.EXP.SEED,
        mean_bgr=cfg.IMAGE.MEAN, scale_choices=cfg.AUGMENTATION.SCALE_CHOICES,
        scale_range=cfg.AUGMENTATION.SCALE_RANGE, flip=cfg.AUGMENTATION.FLIP, augment=augment,
        test_size=cfg.IMAGE.SIZE.TEST, eval_original_size=cfg.IMAGE.EVAL_ORIGINAL_SIZE)
    return DATASETS[name](cfg.DATASET.ROOT, resolve_split(cfg, split), cfg.DATASET.N_CLASSES,
                          transform, cfg.DATASET.SKIP_BAD_SAMPLES, class_names)

