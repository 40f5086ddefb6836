"""Evaluation throughput on this machine, with and without the dense CRF.

    python -m benchmarks.bench_eval                    # ResNet-101 MSC, 182 classes, 513
    python -m benchmarks.bench_eval --n-images 2 --size 321

Run it from the repository root.

The model is the full DeepLab v2 (ResNet-101 + ASPP + MSC) of
``config/cocostuff.yaml`` with random weights: its speed does not depend on the
weights. Its softmax does, though (random weights give a near-uniform map that
label pruning would reduce to one label), so for the CRF runs the model still
runs on every image but the CRF gets the realistic probability map and image of
``bench_crf.realistic_sample`` instead; everything else is eval.py's own code
path (``predict_probs``, ``map_crf`` with its worker processes running while
the model works on the next image, ``ConfusionMatrix``). All variants run in
this one process, one after the other, on the same images.
"""

import time
from pathlib import Path

import click
import numpy as np
import torch

from libs.datasets import to_rgb_uint8
from libs.inference.crf import DenseCRF, default_n_jobs, map_crf
from libs.inference.metric import ConfusionMatrix
from libs.inference.predict import predict_probs
from libs.models import build_model
from libs.utils.config import load_config
from benchmarks.bench_crf import realistic_sample

ROOT = Path(__file__).resolve().parents[1]


@click.command()
@click.option("--config", "config_path", default=str(ROOT / "config" / "cocostuff.yaml"),
              show_default=True)
@click.option("--size", default=None, type=int, help="Image side  [default: IMAGE.SIZE.TEST]")
@click.option("--n-images", default=4, show_default=True)
@click.option("--full-crf/--no-full-crf", default=True, show_default=True,
              help="Also time the unpruned CRF (slow).")
@click.option("--prune-threshold", default=0.05, show_default=True,
              help="Label pruning of the pruned-CRF row (eval.py --crf-prune).")
@click.option("--seed", default=0, show_default=True)
def main(config_path, size, n_images, full_crf, prune_threshold, seed):
    """Images per second of eval.py's pipeline: no CRF, pruned CRF, full CRF."""
    cfg = load_config(config_path)
    size = size or cfg.IMAGE.SIZE.TEST
    n_classes = cfg.DATASET.N_CLASSES
    rng = np.random.default_rng(seed)
    samples = [realistic_sample(rng, n_classes, size) for _ in range(n_images)]
    mean = np.array([cfg.IMAGE.MEAN.B, cfg.IMAGE.MEAN.G, cfg.IMAGE.MEAN.R], np.float32)
    inputs = [torch.from_numpy((image[..., ::-1] - mean).transpose(2, 0, 1).copy())[None]
              for image, _, _ in samples]
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).eval()
    print(f"{cfg.MODEL.NAME} {cfg.MODEL.BACKBONE.N_BLOCKS}, {n_classes} classes, {n_images} images "
          f"{size}x{size}, {torch.get_num_threads()} torch threads, "
          f"{default_n_jobs()} CRF workers")
    with torch.inference_mode():
        predict_probs(model, inputs[0], (size, size))  # warm-up

    def model_stream(matrix, with_crf_inputs):
        with torch.inference_mode():
            for x, (image, prob, truth) in zip(inputs, samples):
                probs = predict_probs(model, x, (size, size))
                if not with_crf_inputs:
                    matrix.update(truth, probs.argmax(dim=1)[0].numpy())
                    continue
                rgb = to_rgb_uint8(x[0], cfg.IMAGE.MEAN)
                assert (rgb == image).all()
                yield truth, rgb, prob  # the realistic map stands in for the network's

    def run(crf):
        matrix = ConfusionMatrix(n_classes)
        start = time.perf_counter()
        if crf is None:
            for _ in model_stream(matrix, False):
                pass
        else:
            for truth, labels in map_crf(crf, model_stream(matrix, True), argmax=True):
                matrix.update(truth, labels)
        return n_images / (time.perf_counter() - start)

    exact = DenseCRF.from_config(cfg.CRF).with_prune_threshold(None)
    variants = [("no CRF", None),
                (f"CRF pruned at {prune_threshold:g}", exact.with_prune_threshold(prune_threshold))]
    if full_crf:
        variants.append(("CRF, all labels (exact)", exact))
    for name, crf in variants:
        rate = run(crf)
        print(f"{name:<24} {rate:.4f} images/s ({1 / rate:.1f} s/image)", flush=True)


if __name__ == "__main__":
    main()
