"""What ``--resume`` checks before it continues a run: same meaning, iterations left, same threads.
Resuming with another model, data, batch or schedule would silently train a run that is neither the
old one nor a new one, so the :data:`MEANING_KEYS` must match the checkpoint's ``config`` or be
allowed (``--allow-config-change KEY``); logging and output keys may change freely."""

import torch

from ..utils.errors import CheckpointError

# Exact keys, or sections ending in "." (every key below them).
MEANING_KEYS = ("MODEL.", "DATASET.N_CLASSES", "DATASET.NAME", "DATASET.ROOT",
                "DATASET.SPLIT.TRAIN", "DATASET.IGNORE_LABEL", "SOLVER.BATCH_SIZE.TRAIN",
                "SOLVER.ITER_SIZE", "SOLVER.ITER_MAX", "SOLVER.LR", "SOLVER.LR_DECAY",
                "SOLVER.LR_MULT.", "SOLVER.MOMENTUM", "SOLVER.WEIGHT_DECAY", "SOLVER.POLY_POWER",
                "EXP.SEED", "AUGMENTATION.", "IMAGE.SIZE.TRAIN", "IMAGE.MEAN.")
IGNORED_KEYS = ("MODEL.INIT_MODEL",)  # a resumed run takes its weights from the checkpoint
ALL = "ALL"


def flatten(tree, prefix=""):
    """``{"A": {"B": 1}}`` -> ``{"A.B": 1}`` (lists stay values)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def covered(key, patterns):
    """Whether ``key`` is one of ``patterns`` or lies below one ending in "." (or named bare)."""
    return any(key == p or (p.endswith(".") and key.startswith(p))
               or key.startswith(p + ".") for p in patterns)


def config_changes(saved, current):
    """``[(key, checkpoint value, config value)]`` for the meaning keys that differ."""
    old, new = flatten(saved), flatten(current)
    return [(key, old[key], new.get(key)) for key in sorted(old)
            if covered(key, MEANING_KEYS) and not covered(key, IGNORED_KEYS)
            and old[key] != new.get(key)]


def refused_changes(changes, allowed):
    """The changes not let through: a longer ITER_MAX always passes, ``allowed`` keys (or ALL)."""
    return [(key, old, new) for key, old, new in changes
            if ALL not in allowed and not covered(key, allowed)
            and not (key == "SOLVER.ITER_MAX" and isinstance(old, int) and new > old)]


def check_resume(checkpoint, cfg, path, allowed=(), log=print):
    """Raise :class:`CheckpointError` unless ``checkpoint`` (read from ``path``) can continue
    ``cfg``: iterations left, no refused change in the meaning keys (allowed ones are logged).
    Another torch thread count is a warning: the run continues, but not bit-identically."""
    iteration, iter_max = int(checkpoint["iteration"]), cfg.SOLVER.ITER_MAX
    if iteration >= iter_max:
        raise CheckpointError(f"{path}: holds iteration {iteration}, and SOLVER.ITER_MAX is "
                          f"{iter_max}: nothing left to train (raise SOLVER.ITER_MAX to go on)")
    saved = checkpoint.get("config")
    if isinstance(saved, dict):
        changes = config_changes(saved, cfg.to_dict())
        refused = refused_changes(changes, allowed)
        if refused:
            listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in refused)
            raise CheckpointError(f"{path}: the config differs from the checkpoint's: {listed} "
                              "(resume with the checkpoint's values, or allow a deliberate change "
                              "with --allow-config-change KEY)")
        for key, old, new in changes:
            log(f"Config change on resume: {key}: {old!r} -> {new!r}")
    threads = checkpoint.get("num_threads")
    if threads is not None and threads != torch.get_num_threads():
        log(f"Warning: {path} was trained with {threads} torch thread(s), this run uses "
            f"{torch.get_num_threads()}: it will not be bit-identical to an uninterrupted run "
            f"(set OMP_NUM_THREADS={threads} for that).")
