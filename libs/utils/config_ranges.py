"""The rules of a config that its schema cannot state: ranges of values and relations between keys.

:func:`check_ranges` runs on the mapping that has passed the schema (types are
right), so every rule here can assume the type and only judges the value. Each
failure is one :class:`ConfigError` line naming the file and the dotted key.
"""

from .config_sources import ConfigError


def check_ranges(checked, path):
    """Raise :class:`ConfigError` for the first value of ``checked`` (a schema-checked mapping)
    that is out of range or inconsistent with another key."""
    _check_scales(checked["AUGMENTATION"], path)


def _check_scales(augmentation, path):
    """The rules the schema cannot state: one scale key set, positive scales, min <= max.

    A discrete list and a continuous range are different augmentations, so neither key
    is ever guessed from the other's shape, and a config that sets both is ambiguous.
    """
    choices, value_range = augmentation["SCALE_CHOICES"], augmentation["SCALE_RANGE"]
    keys = "AUGMENTATION.SCALE_CHOICES and AUGMENTATION.SCALE_RANGE"
    if choices is None and value_range is None:
        raise ConfigError(f"{path}: {keys} are both null; set exactly one "
                          "(Caffe's protocol: SCALE_CHOICES: [0.5, 0.75, 1.0, 1.25, 1.5])")
    if choices is not None and value_range is not None:
        raise ConfigError(f"{path}: {keys} are both set; set exactly one, the other null")
    name = "SCALE_CHOICES" if choices is not None else "SCALE_RANGE"
    for i, v in enumerate(augmentation[name]):
        if not v > 0:  # also refuses nan
            raise ConfigError(f"{path}: key AUGMENTATION.{name}[{i}]: "
                              f"expected a positive number, got {v!r}")
    if value_range is not None and value_range[0] > value_range[1]:
        raise ConfigError(f"{path}: key AUGMENTATION.SCALE_RANGE: expected [min, max] with "
                          f"min <= max, got {value_range}")
