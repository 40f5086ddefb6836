"""The rules of a config that its schema cannot state: ranges of values and relations between keys.

They run after the schema, so each rule only judges the value. Each failure is one line naming
the file and the dotted key: a zero or negative count would otherwise surface hours later as a
ZeroDivisionError deep in training, or silently (``ITER_MAX: 0`` writing an untrained model).
"""

import math

from .errors import ConfigError


def _finite(test, expected):
    """A rule for numbers: finite (nan and inf are refused) and ``test``."""
    return (lambda v: math.isfinite(v) and test(v)), expected


POSITIVE_INT = _finite(lambda v: v > 0, "a positive integer")
NON_NEGATIVE_INT = _finite(lambda v: v >= 0, "an integer >= 0")
POSITIVE = _finite(lambda v: v > 0, "a positive number")
NON_NEGATIVE = _finite(lambda v: v >= 0, "a number >= 0")
FINITE = _finite(lambda v: True, "a finite number")
NON_EMPTY = (lambda v: bool(v.strip())), "a non-empty string"


def _keys(section, names, rule):
    """``{"<section>.<name>": rule}`` for each of the space-separated ``names``."""
    return {f"{section}.{name}": rule for name in names.split()}


# Dotted key -> (rule, what the rule expects), in the order they are checked. A list value is
# judged item by item; a null (an Optional key that is off) and a key this config lacks are skipped.
RULES = {
    **_keys("EXP", "ID OUTPUT_DIR LOG_DIR", NON_EMPTY),
    "EXP.SEED": NON_NEGATIVE_INT,  # numpy's generators refuse negative seeds
    **_keys("DATASET", "ROOT LABELS", NON_EMPTY),
    "DATASET.N_CLASSES": POSITIVE_INT,
    **_keys("DATASET.SPLIT", "TRAIN TEST", NON_EMPTY),
    **_keys("DATASET.SYNTHETIC", "N_TRAIN N_TEST", POSITIVE_INT),
    **_keys("DATASET.SYNTHETIC", "HEIGHT WIDTH", ((lambda v: v >= 8), "an integer >= 8")),
    "DATALOADER.NUM_WORKERS": NON_NEGATIVE_INT,
    **_keys("IMAGE.MEAN", "B G R", FINITE),
    **_keys("IMAGE.SIZE", "TRAIN TEST DEMO DEMO_FAST", POSITIVE_INT),
    **_keys("MODEL", "BACKBONE.N_BLOCKS BACKBONE.BASE_WIDTH ATROUS_RATES", POSITIVE_INT),
    "MODEL.MSC.SCALES": _finite(lambda v: 0 < v <= 1, "a scale in (0, 1]"),  # [] is single scale
    "MODEL.OUTPUT_STRIDE": ((lambda v: v in (8, 16)), "8 or 16"),
    **_keys("MODEL", "MULTI_GRID HEAD_CHANNELS DECODER_CHANNELS", POSITIVE_INT),
    **_keys("SOLVER", "BATCH_SIZE.TRAIN BATCH_SIZE.TEST ITER_SIZE ITER_MAX ITER_SNAP ITER_TB "
                      "ITER_EVAL", POSITIVE_INT),
    "SOLVER.LR": POSITIVE, "SOLVER.LR_DECAY": POSITIVE_INT,
    **_keys("SOLVER.LR_MULT", "BACKBONE ASPP_WEIGHT ASPP_BIAS", NON_NEGATIVE),
    "SOLVER.MOMENTUM": _finite(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    **_keys("SOLVER", "WEIGHT_DECAY POLY_POWER", NON_NEGATIVE),
    "SOLVER.AVERAGE_LOSS": POSITIVE_INT,
    "CRF.ITER_MAX": POSITIVE_INT, "CRF.POS_W": NON_NEGATIVE,
    "CRF.POS_XY_STD": POSITIVE, "CRF.BI_W": NON_NEGATIVE,
    **_keys("CRF", "BI_XY_STD BI_RGB_STD", POSITIVE),
    "CRF.PRUNE_THRESHOLD": _finite(lambda v: 0 <= v < 1, "a number in [0, 1) or null"),
    "CRF.TORCH_MEMORY_MB": POSITIVE_INT,
    **_keys("AUGMENTATION", "SCALE_CHOICES SCALE_RANGE", ((lambda v: v > 0), "a positive number")),
}


def check_ranges(checked, path):
    """Raise :class:`ConfigError` for the first value of ``checked`` (a schema-checked mapping)
    that is out of range or inconsistent with another key."""
    for key, (rule, expected) in RULES.items():
        value = checked
        for name in key.split("."):  # a key this config lacks, or under a null, is skipped
            value = value.get(name) if isinstance(value, dict) else None
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if item is not None and (isinstance(item, bool) or not rule(item)):
                where = key if i is None else f"{key}[{i}]"
                raise ConfigError(f"{path}: key {where}: expected {expected}, got {item!r}")
    # Exactly one scale key, min <= max: a discrete list and a continuous range are different
    # augmentations, so neither is guessed from the other's shape.
    augmentation = checked["AUGMENTATION"]
    choices, value_range = augmentation["SCALE_CHOICES"], augmentation["SCALE_RANGE"]
    keys = "AUGMENTATION.SCALE_CHOICES and AUGMENTATION.SCALE_RANGE"
    if choices is None and value_range is None:
        raise ConfigError(f"{path}: {keys} are both null; set exactly one "
                          "(Caffe's protocol: SCALE_CHOICES: [0.5, 0.75, 1.0, 1.25, 1.5])")
    if choices is not None and value_range is not None:
        raise ConfigError(f"{path}: {keys} are both set; set exactly one, the other null")
    if value_range is not None and value_range[0] > value_range[1]:
        raise ConfigError(f"{path}: key AUGMENTATION.SCALE_RANGE: expected [min, max] with "
                          f"min <= max, got {value_range}")
    # IGNORE_LABEL must not be a class: pixels of that class would silently never train.
    n_classes, ignore = checked["DATASET"]["N_CLASSES"], checked["DATASET"]["IGNORE_LABEL"]
    if 0 <= ignore < n_classes:
        raise ConfigError(f"{path}: key DATASET.IGNORE_LABEL: expected a value outside the "
                          f"classes 0..{n_classes - 1} (DATASET.N_CLASSES: {n_classes}), "
                          f"got {ignore}")
