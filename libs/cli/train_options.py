"""``train.py``'s run options (``--resume``, ``--overwrite``, ``--allow-config-change``) and
what the script says when a stop signal ends a run: where it stopped and how to go on."""

import contextlib
import os
import shlex
import sys

import click

from ..training.interrupt import TrainingInterrupted, signal_name


def run_options(function):
    """``--resume PATH|latest``, ``--overwrite`` and ``--allow-config-change KEY``."""
    options = [
        click.option("--resume", default=None, metavar="PATH|latest",
                     help="Continue from a training checkpoint exactly where it stopped; "
                          "'latest': the newest checkpoint_<iteration>.pth of this EXP.ID."),
        click.option("--overwrite", is_flag=True, default=False,
                     help="Start this EXP.ID anew: first DELETES its earlier checkpoints "
                          "(and their results) and its TensorBoard logs and train.log. "
                          "Without it (or --resume) an EXP.ID that holds a run is refused."),
        click.option("--allow-config-change", "allow_changes", multiple=True, metavar="KEY",
                     help="With --resume: let this config key (or section, e.g. SOLVER.LR, "
                          "AUGMENTATION; ALL for every key) differ from the checkpoint's. "
                          "Repeatable. A longer SOLVER.ITER_MAX is always allowed."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def interrupted_lines(error, config_path, overrides):
    """What rank 0 prints after a stop signal: where the run is, and the command to go on."""
    name = signal_name(error.signum)
    if error.complete:
        return [f"{name}: training is complete ({error.checkpoint}); stopped before scoring."]
    words = ["python", "train.py", "--config", str(config_path)]
    words += [word for override in overrides for word in ("--set", override)]
    words += ["--resume", str(error.checkpoint)]
    lines = [f"{name}: stopped after iteration {error.iteration}; saved {error.checkpoint}",
             "Resume with:", "  " + " ".join(shlex.quote(word) for word in words)]
    if "RANK" in os.environ:  # torchrun's variables: the launcher's own arguments are unknown here
        lines.append("  (launched by torchrun: launch it the same way, with these train.py "
                     "arguments)")
    return lines


@contextlib.contextmanager
def exit_on_interrupt(config_path, overrides):
    """Turn a stopped run into its message and exit status 128 + the signal (130, 143, 129)."""
    try:
        yield
    except TrainingInterrupted as error:
        if error.iteration is None:  # a second Ctrl-C
            click.echo(f"Second {signal_name(error.signum)}: stopped at once, without a "
                       "checkpoint of this iteration (the last saved one is intact).", err=True)
        elif error.checkpoint is not None:  # the process that wrote it (rank 0)
            click.echo("\n".join(interrupted_lines(error, config_path, overrides)), err=True)
        sys.exit(error.exit_code)
