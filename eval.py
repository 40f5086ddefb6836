#!/usr/bin/env python
"""Score a DeepLab model (v2, v3, v3+) on the test split (see docs/eval.md).

    python eval.py --config config/cocostuff.yaml --model-path PATH [--crf [--crf-prune T]]

The scores go to a JSON file next to the model (or ``--output``) and to the terminal; the work
is done in ``libs/inference/evaluation.py``, this script parses, wires and reports.
"""

import sys
from pathlib import Path

import click
from tqdm import tqdm

from libs.cli import (command, config_option, cuda_option, load_cli_config, model_path_option,
                      one_line_errors, parse_positive_floats, precision_option)
from libs.inference.crf import DenseCRF
from libs.inference.evaluation import EvalOptions, default_output_path, evaluate_and_report
from libs.inference.predict import load_model
from libs.utils.atomic import (check_writable_output, refuse_overwriting_inputs,
                               remove_stale_temporaries)
from libs.utils.device import choose_device

FROM_CONFIG = object()  # --crf-prune not given: the config's CRF.PRUNE_THRESHOLD applies
EXACT_WORDS = ("none", "off", "exact")


def parse_prune_threshold(ctx, param, text):
    """``--crf-prune``: a threshold in [0, 1), or none/off/exact for the CRF over all labels."""
    if text is None:
        return FROM_CONFIG
    if text.strip().lower() in EXACT_WORDS:
        return None
    try:
        if 0.0 <= float(text) < 1.0:
            return float(text)
    except ValueError:
        pass
    raise click.BadParameter(f"expected a number in [0, 1) or none, got {text!r}")


@command()
@config_option(help="YAML config, e.g. config/cocostuff.yaml.")
@model_path_option()
@click.option("--crf/--no-crf", default=False, show_default=True,
              help="Refine with the dense CRF of the config's CRF section.")
@click.option("--crf-prune", "prune_threshold", metavar="T|none", default=None,
              callback=parse_prune_threshold,
              help="Label pruning for this run: keep the labels whose probability exceeds "
                   "T in [0, 1) somewhere (faster, nearly exact), or 'none' for the exact "
                   "CRF  [default: the config's CRF.PRUNE_THRESHOLD]")
@click.option("--crf-backend", type=click.Choice(["auto", "pydensecrf", "torch"]), default=None,
              help="pydensecrf (worker processes on the CPU) or torch (this process, on the "
                   "model's device; auto: on CUDA)  [default: the config's CRF.BACKEND]")
@click.option("--n-jobs", type=click.IntRange(min=1), default=None,
              help="CRF worker processes of the pydensecrf backend  [default: all cores]")
@click.option("--scales", "tta_scales", default="1.0", show_default=True,
              callback=lambda ctx, param, value: parse_positive_floats(value),
              help="Test-time input scales, comma-separated (e.g. 0.75,1.0,1.25); "
                   "probabilities are averaged.")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Also average over horizontally flipped inputs.")
@click.option("--split", default="test", show_default=True,
              help="'test'/'train' (DATASET.SPLIT) or a literal split name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Results JSON  [default: next to the model, "
                   "<model>_<split>[_first<N>][_ms..][_flip][_crf[-prune<t>]].json; for a "
                   "released model's name, under EXP.OUTPUT_DIR/released/]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N images (quick checks, throughput).")
@cuda_option()
@precision_option()
def main(config_path, model_path, crf, prune_threshold, crf_backend, n_jobs, tta_scales, flip,
         split, output, limit, cuda, precision):
    """Score a model on the test split: pixel accuracy, mean accuracy, mean IoU, FW IoU."""
    if prune_threshold is not FROM_CONFIG and not crf:
        raise click.UsageError("--crf-prune sets the CRF's label pruning: add --crf")
    with one_line_errors(config_path):
        cfg = load_cli_config(config_path)
        device = choose_device(cuda)
        dense_crf = DenseCRF.from_config(cfg.CRF, device, crf_backend) if crf else None
        if dense_crf is not None and prune_threshold is not FROM_CONFIG:
            dense_crf = dense_crf.with_prune_threshold(prune_threshold)
        options = EvalOptions(split, dense_crf, n_jobs, tta_scales, flip, limit)
        model = load_model(cfg, model_path, device, precision=precision)
        # Checked before the slow part; what killed runs left in its folder is cleared only
        # now that the model loaded, so a mistyped model path creates no folder.
        output = output or default_output_path(model_path, options,
                                               Path(cfg.EXP.OUTPUT_DIR) / "released")
        refuse_overwriting_inputs(output, {"model file": model_path, "config file": config_path})
        check_writable_output(output)
        remove_stale_temporaries(Path(output).parent, suffixes=(Path(output).suffix,))
        if options.crf is not None:
            tqdm.write(options.crf.describe(n_jobs))
        evaluate_and_report(cfg, model, device, output, options, extra={
            "config": str(config_path), "model_path": str(model_path), "precision": precision})


if __name__ == "__main__":
    sys.exit(main())
