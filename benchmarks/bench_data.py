"""Throughput of the data pipeline: training samples per second in one process.

Writes a small COCO-Stuff-10k-layout dataset of 640x480 JPEGs (the typical COCO
size) with .mat annotations, then times ``build_dataset(cfg, "train", augment=True)``
items at the real protocol's 321x321 crop with ``num_workers=0``, and the parts of
one item (JPEG decode, .mat read, transform) in the same run so their shares are
comparable even on a busy machine.

    python -m benchmarks.bench_data [--n-images 24] [--repeats 3]
"""

import tempfile
import time
from pathlib import Path

import click
import numpy as np
from addict import Dict

from libs.datasets import build_dataset
from libs.datasets.images import read_image_bgr, read_mat_label
from libs.datasets.synthetic import Sizes, generate_synthetic
from libs.utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
COCO_HEIGHT, COCO_WIDTH = 480, 640


def best_rate(fn, n, repeats):
    """Items per second of the fastest of ``repeats`` passes over ``n`` items."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - start)
    return n / best


@click.command()
@click.option("--n-images", default=24, show_default=True, help="Images in the benchmark set.")
@click.option("--repeats", default=3, show_default=True, help="Passes; the fastest counts.")
@click.option("--config", default=str(REPO / "config" / "cocostuff.yaml"), show_default=True)
def main(n_images, repeats, config):
    """Measure training-pipeline samples/s per worker at the config's crop size."""
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic(Path(tmp) / "bench", Sizes(n_images, 1, COCO_HEIGHT, COCO_WIDTH), seed=0)
        cfg = Dict(load_config(config).to_dict())
        cfg.DATASET.ROOT = str(root)
        cfg.DATASET.NAME = "cocostuff10k"
        cfg.DATASET.SYNTHETIC = None
        cfg.DATASET.N_CLASSES = 182  # synthetic labels 0..7 are valid COCO-Stuff ids
        cfg.DATASET.LABELS = str(REPO / "data" / "cocostuff-labels.txt")
        train = build_dataset(cfg, "train", augment=True)
        evaluation = build_dataset(cfg, "train", augment=False)
        ids = train.ids
        jpeg_kb = np.mean([(root / "images" / f"{i}.jpg").stat().st_size for i in ids]) / 1024

        def decode(k):
            read_image_bgr(root / "images" / f"{ids[k]}.jpg")

        def read_mat(k):
            read_mat_label(root / "annotations" / f"{ids[k]}.mat")

        samples = [train.read_sample(i) for i in ids]

        def transform(k):
            train._transform(*samples[k], k)

        def train_item(k):
            train[k]

        def eval_item(k):
            evaluation[k]

        n = len(ids)
        rates = {
            "train item (decode + .mat + augment)": best_rate(train_item, n, repeats),
            "eval item (decode + .mat + 513 warp)": best_rate(eval_item, n, repeats),
            "JPEG decode only": best_rate(decode, n, repeats),
            ".mat read only": best_rate(read_mat, n, repeats),
            "augment only (scale/pad/crop/flip)": best_rate(transform, n, repeats),
        }
    crop = cfg.IMAGE.SIZE.TRAIN
    print(f"{n} images {COCO_WIDTH}x{COCO_HEIGHT}, mean JPEG {jpeg_kb:.0f} KiB, crop {crop}, "
          f"num_workers=0, best of {repeats}")
    train_rate = rates["train item (decode + .mat + augment)"]
    for name, rate in rates.items():
        share = train_rate / rate if "only" in name else 1.0
        extra = f"  ({share:.0%} of a train item)" if "only" in name else ""
        print(f"  {name:40s} {rate:7.1f} items/s  {1000 / rate:6.2f} ms{extra}")


if __name__ == "__main__":
    main()
