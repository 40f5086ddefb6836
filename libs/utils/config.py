"""Load and validate the YAML experiment configs in ``config/``.

The YAML file is the single source of truth for every default, so the loader is strict: a key
that is missing, misspelled, unknown or of the wrong type is a :class:`ConfigError` whose one-line
message names the file and the dotted key, at start-up rather than hours into a training run.
"""

from dataclasses import dataclass
from pathlib import Path

from addict import Dict

from .config_ranges import check_ranges
from .config_sources import RENAMED_KEYS, apply_overrides, read_with_bases
from .errors import ConfigError


@dataclass
class Optional:
    """Schema marker: the value may be ``null`` or match ``inner``."""

    inner: object


class OneOf:
    """Schema marker: one of a few strings (``hint`` is added to the error, e.g. for old values)."""

    def __init__(self, *values, hint=""):
        self.values, self.hint = values, hint


@dataclass
class ListOf:
    """Schema marker: a list whose items match ``item`` (and of length ``length`` if set)."""

    item: object
    length: int = None
    min_length: int = 0


# The shape of every config. Leaves are types (or Optional/ListOf markers);
# nested dicts are sections. Values live only in the YAML files.
SCHEMA = {
    # ID names the run: checkpoints go to OUTPUT_DIR/ID, logs to LOG_DIR/ID.
    "EXP": {"ID": str, "OUTPUT_DIR": str, "LOG_DIR": str, "SEED": int},
    "DATASET": {
        "NAME": str,  # cocostuff10k | cocostuff164k
        "ROOT": str,
        "LABELS": str,  # "id<TAB>name" file with the class names
        "N_CLASSES": int,
        "IGNORE_LABEL": int,
        "SPLIT": {"TRAIN": str, "TEST": str},
        "SKIP_BAD_SAMPLES": bool,
        # When set, the dataset is generated at ROOT on first use.
        "SYNTHETIC": Optional({"N_TRAIN": int, "N_TEST": int, "HEIGHT": int, "WIDTH": int}),
    },
    "DATALOADER": {"NUM_WORKERS": int},
    "IMAGE": {
        "MEAN": {"B": float, "G": float, "R": float},
        "SIZE": {
            "TRAIN": int,  # random crop side during training
            "TEST": int,  # side that evaluation images are warped to
            "DEMO": int,  # longer side of demo images and video frames at the network
            "DEMO_FAST": int,  # uvcdemo --fast: shorter side of frames, single scale
        },
        "EVAL_ORIGINAL_SIZE": bool,  # score at the annotation's own resolution
    },
    "AUGMENTATION": {
        # Exactly one of the two is set, the other null (checked by _check_scales).
        "SCALE_CHOICES": Optional(ListOf(float, min_length=1)),  # drawn uniformly (Caffe's)
        "SCALE_RANGE": Optional(ListOf(float, length=2)),  # [min, max], drawn continuously
        "FLIP": bool,
    },
    "MODEL": {
        "NAME": str,  # DeepLabV2_ResNet101_MSC | DeepLabV3_ResNet101 | DeepLabV3Plus_ResNet101
        "BACKBONE": {
            "NAME": str,  # a registered backbone (libs/models/backbone.py): resnet101_caffe
            "N_BLOCKS": ListOf(int, length=4),
            "BASE_WIDTH": int,  # 64 for ResNet-101; smaller only for tiny test/quick-start models
            "BN": OneOf("frozen", "train"),
        },
        "ATROUS_RATES": ListOf(int, min_length=1),
        "MSC": {
            "SCALES": ListOf(float),  # [] is single scale
            "GEOMETRY": str,  # caffe (corner-aligned, the default) | pytorch (original repo's)
        },
        "INIT_MODEL": Optional(str),
        # and the keys of MODEL_KEYS[NAME]
    },
    "SOLVER": {
        "BATCH_SIZE": {"TRAIN": int, "TEST": int},
        "ITER_SIZE": int, "ITER_MAX": int, "ITER_SNAP": int, "ITER_TB": int,
        "ITER_EVAL": Optional(int),  # score the test split every N iterations (null: at the end)
        "LR": float, "LR_DECAY": int,
        "LR_MULT": {"BACKBONE": float, "ASPP_WEIGHT": float, "ASPP_BIAS": float},
        "MOMENTUM": float, "WEIGHT_DECAY": float, "POLY_POWER": float, "AVERAGE_LOSS": int,
        # Mixed precision on CUDA (the loss stays fp32); refused on a CPU without native bf16.
        "AMP": Optional(OneOf("bf16", "fp16", hint="(true/false before; true was bf16)")),
        "ACTIVATION_CHECKPOINTING": bool,  # recompute activations in backward: ~half the memory
        "CHANNELS_LAST": bool,  # NHWC memory layout (CUDA)
        "COMPILE": bool,  # torch.compile the model where it works (falls back with a notice)
    },
    "CRF": {
        "ITER_MAX": int,
        "POS_W": float, "POS_XY_STD": float,
        "BI_W": float, "BI_XY_STD": float, "BI_RGB_STD": float,
        "PRUNE_THRESHOLD": Optional(float),
        "LEGACY_MEAN_SUBTRACTED_IMAGE": bool,
        "BACKEND": OneOf("auto", "pydensecrf", "torch"),  # the same exact CRF; auto: torch on CUDA
        "TORCH_MEMORY_MB": int,  # torch backend: images of one size share a batch within this
    },
}


# The MODEL keys only some models take (lower-cased, the builder's arguments of that name).
V3_KEYS = {
    "OUTPUT_STRIDE": int,  # 16 | 8 (with the rates doubled)
    "MULTI_GRID": ListOf(int, min_length=1),  # the last stage's block i rate factor: [1, 2, 4]
    "HEAD_CHANNELS": int,  # ASPP, projection and decoder width (256)
    "HEAD_BN": OneOf("train", "frozen"),  # v2's ASPP has no BatchNorm
}
MODEL_KEYS = {
    "DeepLabV2_ResNet101_MSC": {},
    "DeepLabV3_ResNet101": V3_KEYS,
    "DeepLabV3Plus_ResNet101": {**V3_KEYS, "DECODER_CHANNELS": int},  # res2 reduced to (48)
}


def foreign_model_key(model):
    """What is wrong with the first key of ``model`` (a ``MODEL`` mapping) that only other
    models take, or None."""
    if not hasattr(model, "keys"):  # not a config mapping: nothing to check
        return None
    name = model.get("NAME")
    for key in model:
        owners = [n for n, keys in MODEL_KEYS.items() if key in keys]
        if name in MODEL_KEYS and owners and key not in MODEL_KEYS[name]:
            return (f"key MODEL.{key}: {name} has no {key} (a key of {' and '.join(owners)}); "
                    "remove it")
    return None


# Keys that once existed, with what replaced them. A retired key gets its own message instead
# of "unknown key", because an old config deserves to be told what changed, not that it is wrong.
RETIRED_KEYS = {
    "AUGMENTATION.SCALES": ("AUGMENTATION.SCALES was a [min, max] range; use "
                            "AUGMENTATION.SCALE_RANGE for that, or AUGMENTATION.SCALE_CHOICES "
                            "for Caffe's discrete scales"),
    **{old: f"key {old} is now {new}" for old, new in RENAMED_KEYS.items()},
}


# Each scalar type's name in messages and what it accepts (bool is a subclass of int in Python).
SCALARS = {
    bool: ("true/false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def _type_name(spec):
    if isinstance(spec, Optional):
        return f"{_type_name(spec.inner)} or null"
    if isinstance(spec, ListOf):
        n = f" of length {spec.length}" if spec.length is not None else ""
        return f"a list{n} of {_type_name(spec.item)}"
    if isinstance(spec, dict):
        return "a mapping"
    if isinstance(spec, OneOf):
        return "one of " + ", ".join(repr(v) for v in spec.values)
    return SCALARS[spec][0]


def _check(value, spec, key, path):
    """Return ``value`` converted to the schema (ints widened to floats) or raise."""

    def fail(problem):
        raise ConfigError(f"{path}: key {key}: {problem}")

    if isinstance(spec, Optional):
        return None if value is None else _check(value, spec.inner, key, path)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            fail(f"expected a mapping, got {value!r}")
        if key == "MODEL":
            spec = {**SCHEMA["MODEL"], **MODEL_KEYS.get(value.get("NAME"), {})}
            if problem := foreign_model_key(value):
                raise ConfigError(f"{path}: {problem}")
        prefix = f"{key}." if key else ""
        unknown = [prefix + name for name in sorted(set(value) - set(spec))]
        if retired := [dotted for dotted in unknown if dotted in RETIRED_KEYS]:
            raise ConfigError(f"{path}: {RETIRED_KEYS[retired[0]]}")
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]}")
        out = {}
        for name, sub in spec.items():
            if name not in value:
                raise ConfigError(f"{path}: missing key {prefix}{name}")
            out[name] = _check(value[name], sub, prefix + name, path)
        return out
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            fail(f"expected {_type_name(spec)}, got {value!r}")
        if spec.length is not None and len(value) != spec.length:
            fail(f"expected {_type_name(spec)}, got {len(value)} items")
        if len(value) < spec.min_length:
            fail(f"expected at least {spec.min_length} items, got {len(value)}")
        return [_check(v, spec.item, f"{key}[{i}]", path) for i, v in enumerate(value)]
    if isinstance(spec, OneOf):
        if isinstance(value, bool) or value not in spec.values:
            hint = f" {spec.hint}" if spec.hint else ""
            fail(f"expected {_type_name(spec)}, got {value!r}{hint}")
        return value
    if not SCALARS[spec][1](value):
        fail(f"expected {_type_name(spec)}, got {value!r}")
    return float(value) if spec is float else value


def load_config(path, overrides=()):
    """Read ``path``, merge its ``_BASE_`` chain and ``overrides`` (``--set`` ``KEY=VALUE``
    strings), validate against :data:`SCHEMA`: an :class:`addict.Dict`, frozen so that a typo
    such as ``cfg.SOLVER.LRR`` raises instead of silently yielding an empty dict."""
    path = Path(path)
    checked = _check(apply_overrides(read_with_bases(path), overrides, path), SCHEMA, "", path)
    check_ranges(checked, path)
    cfg = Dict(checked)
    cfg.freeze()
    return cfg
