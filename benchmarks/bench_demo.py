#!/usr/bin/env python
"""Per-frame time of the demo at the default size: full ResNet-101 MSC, 182 classes, CPU.

    python -m benchmarks.bench_demo [--repeats 3] [--crf]      # from the repository root

A 480x640 picture (COCO's usual size) is resized to 385x513 (longer side
IMAGE.SIZE.DEMO of config/cocostuff.yaml) and segmented the way demo.py and
uvcdemo.py do it: network, bilinear upsampling, softmax, argmax. The weights
are random (the cost does not depend on them). In the same run the
single-scale network is timed too, so the cost of the multi-scale inputs is a
ratio unaffected by the machine's load; the load average is printed because
other processes share the CPU.
"""

import os
import statistics
import time
from pathlib import Path

import click
import numpy as np
import torch

from libs.inference.crf import DenseCRF
from libs.inference.predict import crf_image, network_input, resize_longer_side, segment
from libs.models import build_model
from libs.utils.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[1]

PICTURE_SIZE = (480, 640)


def timed(function, repeats):
    function()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def describe(times):
    return (f"median {statistics.median(times):.2f} s (min {min(times):.2f}, "
            f"max {max(times):.2f}, n={len(times)})")


@click.command()
@click.option("--config", "config_path", default=str(REPO_ROOT / "config" / "cocostuff.yaml"),
              show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--crf/--no-crf", default=False, show_default=True,
              help="Also time the demo's --crf step on the segmented frame.")
def main(config_path, repeats, crf):
    cfg = load_config(config_path)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).eval()
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, PICTURE_SIZE + (3,), dtype=np.uint8)
    image = resize_longer_side(picture, cfg.IMAGE.SIZE.DEMO)
    load_before = os.getloadavg()
    print(f"{cfg.MODEL.NAME}, {cfg.DATASET.N_CLASSES} classes, MSC scales "
          f"{cfg.MODEL.MSC.SCALES}; input {image.shape[0]}x{image.shape[1]}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f}")

    mean = cfg.IMAGE.MEAN
    frame_times = timed(lambda: segment(model, image, mean, device), repeats)
    x = network_input(image, mean)
    with torch.inference_mode():
        single_times = timed(lambda: model.base(x), repeats)
    load_after = os.getloadavg()
    frame, single = statistics.median(frame_times), statistics.median(single_times)
    print(f"demo frame (MSC net + upsample + softmax + argmax): {describe(frame_times)} "
          f"= {1 / frame:.3f} frames/s")
    print(f"single-scale network alone: {describe(single_times)}")
    print(f"ratio demo frame / single-scale network: {frame / single:.2f}")
    if crf:
        probs, _ = segment(model, image, mean, device)
        dense_crf = DenseCRF.from_config(cfg.CRF)
        rgb = crf_image(network_input(image, mean)[0], mean,
                        cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE)
        crf_times = timed(lambda: dense_crf(rgb, probs), max(1, repeats - 1))
        print(f"{dense_crf}: {describe(crf_times)} "
              f"(ratio to the frame: {statistics.median(crf_times) / frame:.2f})")
    print(f"load average after {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")


if __name__ == "__main__":
    main()
