#!/usr/bin/env python
"""Score a DeepLab v2 model on the test split (see docs/eval.md).

    python eval.py --config config/cocostuff.yaml --model-path PATH [--crf]

The logits are upsampled bilinearly to the label size, turned into
probabilities (averaged over the test-time scales and flips when asked),
optionally refined by the dense CRF, and the argmax is accumulated into one
confusion matrix over all labelled pixels. The scores go to a JSON file next
to the model (or ``--output``) and to the terminal.
"""

import math
import sys
from pathlib import Path

import click
from tqdm import tqdm

from libs.datasets import DatasetError
from libs.models.weights import CheckpointError
from libs.utils.config import ConfigError, load_config
from libs.inference.crf import DenseCRF, default_n_jobs
from libs.inference.evaluation import evaluate_and_report
from libs.inference.predict import load_model
from libs.utils.device import choose_device


def parse_scales(text):
    """``"0.75,1.0,1.25"`` -> ``(0.75, 1.0, 1.25)``; a click error names the bad part."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise click.BadParameter(f"scales must be positive numbers, got {text!r}")
    return scales


def default_output_path(model_path, split, crf, scales, flip):
    """``<model stem>_<split>[_ms][_flip][_crf].json`` next to the model."""
    model_path = Path(model_path)
    suffix = f"_{split}"
    if tuple(scales) != (1.0,):
        suffix += "_ms" + "-".join(f"{s:g}" for s in scales)
    if flip:
        suffix += "_flip"
    if crf:
        suffix += "_crf"
    return model_path.with_name(model_path.stem + suffix + ".json")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config, e.g. config/cocostuff.yaml.")
@click.option("-m", "--model-path", required=True, type=click.Path(dir_okay=False),
              help="Weights: a converted Caffe model or a train.py checkpoint.")
@click.option("--crf/--no-crf", default=False, show_default=True,
              help="Refine with the dense CRF of the config's CRF section.")
@click.option("--n-jobs", type=click.IntRange(min=1), default=None,
              help="CRF worker processes  [default: all cores]")
@click.option("--scales", default="1.0", show_default=True, callback=lambda c, p, v: parse_scales(v),
              help="Test-time input scales, comma-separated (e.g. 0.75,1.0,1.25); "
                   "probabilities are averaged.")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Also average over horizontally flipped inputs.")
@click.option("--split", default="test", show_default=True,
              help="'test'/'train' (DATASET.SPLIT) or a literal split name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Results JSON  [default: next to the model, "
                   "<model>_<split>[_ms..][_flip][_crf].json]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N images (quick checks, throughput).")
@click.option("--cuda/--no-cuda", default=None,
              help="Run the model on the GPU  [default: when CUDA is available]")
def main(config_path, model_path, crf, n_jobs, scales, flip, split, output, limit, cuda):
    """Score a model on the test split: pixel accuracy, mean accuracy, mean IoU, FW IoU."""
    try:
        cfg = load_config(config_path)
        device = choose_device(cuda)
        model = load_model(cfg, model_path, device)
        dense_crf = DenseCRF.from_config(cfg.CRF) if crf else None
        if dense_crf is not None:
            tqdm.write(f"{dense_crf} on {n_jobs or default_n_jobs()} worker processes")
        output = output or default_output_path(model_path, split, crf, scales, flip)
        evaluate_and_report(
            cfg, model, device, output, split=split, crf=dense_crf, n_jobs=n_jobs,
            scales=scales, flip=flip, limit=limit,
            extra={"config": str(config_path), "model_path": str(model_path)},
        )
    except (ConfigError, DatasetError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
