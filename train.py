#!/usr/bin/env python
"""Train DeepLab (v2, or v3/v3+ by MODEL.NAME) with the v2 paper's protocol (README, "Training"). On
the CPU, one GPU, all GPUs of a machine (DataParallel) or under ``torchrun`` (DDP). The protocol
lives in ``libs/training``; this script parses, wires and reports."""

import functools
import os
import sys

import click

from libs.cli import (OVERRIDES_KEY, command, config_option, cuda_option, load_cli_config,
                      one_line_errors)
from libs.cli.train_options import exit_on_interrupt, run_options
from libs.inference.evaluation import EvalOptions, default_output_path, evaluate_and_report, score
from libs.training import Launch, distributed, record_scores, train
from libs.training.checkpoint import checkpoint_dir
from libs.training.run_folder import prepare_run_folders
from libs.utils.device import choose_device


def train_distributed(cfg, cuda, resume, sources=None, scoring=True, allow_changes=()):
    """Join the process group (under torchrun), train, leave it; return (model, rank, device). With
    ``scoring``, rank 0 scores the test split every ``SOLVER.ITER_EVAL`` iterations."""
    use_cuda = choose_device(cuda).type == "cuda"
    rank, world_size, device = distributed.setup(use_cuda)
    launch = Launch(distributed.wants_data_parallel(use_cuda, world_size), sources, allow_changes)
    evaluator = (functools.partial(score, cfg, device=device, options=EvalOptions(progress=False))
                 if scoring else None)
    try:
        model = train(cfg, device, resume, evaluator=evaluator, launch=launch)
    finally:
        distributed.cleanup()
    return model, rank, device


@command()
@config_option()
@cuda_option("Train on the visible GPUs")
@run_options
@click.option("--eval/--no-eval", "evaluate_after", default=True, show_default=True,
              help="Score the model on the test split when training ends (and every "
                   "SOLVER.ITER_EVAL iterations, when set).")
def main(config_path, cuda, resume, overwrite, allow_changes, evaluate_after):
    """Train the DeepLab model (v2, v3, v3+) configured in CONFIG (every default lives there).

    Launch with torchrun for several processes or machines. Ctrl-C, SIGTERM and SIGHUP stop after
    the current iteration with a checkpoint and print the command that resumes it (exit status
    130, 143, 129); a second Ctrl-C stops at once.
    """
    with one_line_errors(config_path):
        cfg = load_cli_config(config_path)
        overrides = click.get_current_context().meta.get(OVERRIDES_KEY, ())
        sources = {"config": str(config_path), "overrides": list(overrides)}
        resume = prepare_run_folders(cfg.EXP, resume, overwrite, log=click.echo,
                                     check=os.environ.get("RANK", "0") == "0")  # torchrun: rank 0
        with exit_on_interrupt(config_path, overrides):
            model, rank, device = train_distributed(cfg, cuda, resume, sources, evaluate_after,
                                                    allow_changes)
        if evaluate_after and rank == 0:
            final = checkpoint_dir(cfg.EXP) / "checkpoint_final.pth"
            results = evaluate_and_report(cfg, model.eval(), device, default_output_path(final))
            record_scores(cfg, results)  # train.log and TensorBoard (eval/*)


if __name__ == "__main__":
    sys.exit(main())
