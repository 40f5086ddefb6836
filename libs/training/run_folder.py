"""A run's folders before it starts: a new run with the ID of an existing one would overwrite its
checkpoints and mix two runs in one TensorBoard folder, so ``train.py``'s
:func:`prepare_run_folders` refuses it unless told to resume or to start over (library callers of
:func:`~.loop.train` may point it at any folder)."""

import re
from pathlib import Path

from ..utils.atomic import check_writable_dir, remove_stale_temporaries
from .checkpoint import checkpoint_dir
from .runlog import LOG_NAME
from .tensorboard import log_dir
from ..utils.errors import OutputError

LATEST = "latest"
NUMBERED = re.compile(r"^checkpoint_(\d+)\.pth$")
CHECKPOINT_FILES = ("checkpoint_*.pth", "checkpoint_*.json")  # and the results named after them
LOG_FILES = ("events.out.tfevents.*", LOG_NAME)


def run_files(exp):
    """The files of an earlier run under this ``EXP.ID``: checkpoints and results, then logs."""
    found = []
    for folder, patterns in ((checkpoint_dir(exp), CHECKPOINT_FILES), (log_dir(exp), LOG_FILES)):
        if folder.is_dir():
            found += sorted(p for pattern in patterns for p in folder.glob(pattern)
                            if p.is_file() or p.is_symlink())
    return found


def latest_checkpoint(exp):
    """The numbered checkpoint with the highest iteration in the run's folder, or an error."""
    folder = checkpoint_dir(exp)
    numbered = []
    if folder.is_dir():
        numbered = [(int(m.group(1)), p) for p in folder.iterdir()
                    if (m := NUMBERED.match(p.name)) and p.is_file()]
    if not numbered:
        raise OutputError(f"{folder}: no checkpoint_<iteration>.pth to resume "
                             f"(--resume latest); start a new run without --resume")
    return max(numbered)[1]


def prepare_run_folders(exp, resume=None, overwrite=False, check=True, log=print):
    """The checkpoint to resume (``latest`` resolved), after refusing or clearing an old run: an
    ``EXP.ID`` whose folders hold checkpoints or logs is an error unless ``overwrite`` deletes those
    files. ``check`` false (torchrun's ranks above 0 write nothing) only resolves ``resume``."""
    if resume is not None and overwrite:
        raise OutputError("--overwrite starts a new run and --resume continues one; "
                             "give one of them")
    if resume is not None:
        return latest_checkpoint(exp) if str(resume) == LATEST else Path(resume)
    if not check:
        return None
    existing = run_files(exp)
    if existing and not overwrite:
        raise OutputError(
            f"{existing[0].parent}: EXP.ID {exp.ID!r} already holds a run ({len(existing)} "
            "checkpoint/log file(s)); continue it with --resume PATH or --resume latest, or "
            "start anew with another EXP.ID (--set EXP.ID=...) or --overwrite (deletes them)")
    for path in existing:
        path.unlink()
    if existing:
        log(f"--overwrite: deleted {len(existing)} file(s) of the earlier run {exp.ID!r} "
            f"in {checkpoint_dir(exp)} and {log_dir(exp)}.")
    return None


def check_output_folders(exp, log):
    """Fail now, not at the first checkpoint hours in, when a run's folders cannot be written;
    remove the temporary files a killed save left (this program's pattern, older than us)."""
    out_dir = checkpoint_dir(exp)
    check_writable_dir(out_dir, "checkpoints")
    check_writable_dir(log_dir(exp), "TensorBoard logs")
    removed = remove_stale_temporaries(out_dir)
    if removed:
        log(f"Removed {len(removed)} temporary file(s) left in {out_dir} by an interrupted save.")
