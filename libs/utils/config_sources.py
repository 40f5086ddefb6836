"""Where a config's values come from: its file, the files it derives from, and ``--set``.

A config may start with ``_BASE_: other.yaml`` (relative to its own folder): the base is read
first (itself possibly derived) and the file's sections are merged into it key by key, so a
derived config states only what differs. ``--set KEY=VALUE`` overrides come last, each value read
as YAML (``1000``, ``2.5e-4``, ``[0.5, 0.75]``, ``null``). All of this happens before validation,
so the result meets the same schema and the same one-line errors as a complete file.
"""

import copy
import re
from pathlib import Path

import yaml

from .atomic import read_input
from .errors import ConfigError

BASE_KEY = "_BASE_"
# Keys of older configs and what they became (issue 22: one MODEL section per model).
RENAMED_KEYS = {
    "MODEL.N_BLOCKS": "MODEL.BACKBONE.N_BLOCKS", "MODEL.BASE_WIDTH": "MODEL.BACKBONE.BASE_WIDTH",
    "MODEL.BACKBONE_BN": "MODEL.BACKBONE.BN", "MODEL.MSC_SCALES": "MODEL.MSC.SCALES",
    "MODEL.MSC_GEOMETRY": "MODEL.MSC.GEOMETRY",
}


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` and ``1.0e6`` as numbers, as YAML 1.2 (and
    every user) does: PyYAML's YAML 1.1 float pattern needs a dot and a signed exponent."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def refuse_duplicate_keys(node, path, prefix=""):
    """Raise :class:`ConfigError` for a key given twice in one mapping of ``node`` (nested too):
    YAML loaders keep the last value silently, so ``SOLVER.LR`` written twice would train with
    whichever came second."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            refuse_duplicate_keys(item, path, f"{prefix}[{i}]")
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_lines = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        dotted = f"{prefix}.{key_node.value}" if prefix else key_node.value
        line = key_node.start_mark.line + 1
        if key_node.value in first_lines:
            raise ConfigError(f"{path}: line {line}: duplicate key {dotted} (first given at "
                              f"line {first_lines[key_node.value]}); give each key once")
        first_lines[key_node.value] = line
        refuse_duplicate_keys(value_node, path, dotted)


def merge(base, child):
    """``child`` merged into a copy of ``base``: mappings key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both else copy.deepcopy(value)
    return out


def read_with_bases(path, chain=()):
    """The top-level mapping of the YAML file ``path`` (``yaml.safe_load``, duplicate keys refused)
    with its ``_BASE_`` chain merged in; a cycle is an error."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in chain:
        names = " -> ".join(p.name for p in chain + (resolved,))
        raise ConfigError(f"{path}: {BASE_KEY} chain loops back to itself ({names})")
    loader = ConfigLoader(read_input(path, "config file", ConfigError))
    try:
        node = loader.get_single_node()
        refuse_duplicate_keys(node, path)
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    base_name = raw.pop(BASE_KEY, None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: key {BASE_KEY}: expected a file name, got {base_name!r}")
    base_path = path.parent / base_name
    if not base_path.is_file():
        raise ConfigError(f"{path}: key {BASE_KEY}: {base_path} not found")
    return merge(read_with_bases(base_path, chain + (resolved,)), raw)


def apply_overrides(raw, overrides, path):
    """``raw`` with each ``KEY=VALUE`` of ``overrides`` set; the key must already exist."""
    out = copy.deepcopy(raw)
    for text in overrides:
        key, sep, value_text = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. SOLVER.ITER_MAX=1000")
        try:
            value = yaml.load(value_text, Loader=ConfigLoader) if value_text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: {value_text!r} is not a YAML value") from None
        *parents, leaf = key.split(".")
        section = out
        for i, name in enumerate(parents):
            section = section.get(name) if isinstance(section, dict) else None
            if not isinstance(section, dict):
                raise ConfigError(f"{path}: --set {key}: unknown key {'.'.join(parents[:i + 1])}")
        if leaf not in section:
            became = f" (now {RENAMED_KEYS[key]})" if key in RENAMED_KEYS else ""
            raise ConfigError(f"{path}: --set {key}: unknown key {key}{became}")
        section[leaf] = value
    return out
