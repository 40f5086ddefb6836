#!/usr/bin/env python
"""Time the full-size DeepLab v2 (ResNet-101, MSC) on this machine.

Run from the repository root:

    python -m benchmarks.bench_model [--config config/cocostuff.yaml] [--repeats 3]

Reports the eval-mode forward pass at 513x513 (what eval.py runs per image) and
one training iteration at batch 1, 321x321 (forward of all MSC scales, the loss,
backward and the SGD step), as the median of ``--repeats`` runs after a warm-up.
``--config config/toy.yaml --repeats 1`` is a quick smoke run of the tiny model.
"""

import statistics
import time

import click
import torch

from libs.models import build_model
from libs.training.optim import build_optimizer
from libs.utils.config import load_config
from tests.support_training import train_step


def median_seconds(fn, repeats):
    fn()  # warm-up: first calls pay for allocation and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@click.command()
@click.option("--config", "config_path", default="config/cocostuff.yaml", show_default=True)
@click.option("--repeats", default=3, show_default=True)
def main(config_path, repeats):
    cfg = load_config(config_path)
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    device = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    model.eval()
    x = torch.randn(1, 3, cfg.IMAGE.SIZE.TEST, cfg.IMAGE.SIZE.TEST)

    def forward():
        with torch.no_grad():
            model(x)

    t_eval = median_seconds(forward, repeats)
    print(f"eval forward {cfg.IMAGE.SIZE.TEST}x{cfg.IMAGE.SIZE.TEST} (MSC): {t_eval:.2f} s")

    model.train()
    optimizer = build_optimizer(model, cfg.SOLVER)
    crop = cfg.IMAGE.SIZE.TRAIN
    batch = [(["x"], torch.randn(1, 3, crop, crop),
              torch.randint(0, cfg.DATASET.N_CLASSES, (1, crop, crop)))]

    def iteration():
        optimizer.zero_grad(set_to_none=True)
        train_step(model, batch, device)
        optimizer.step()

    t_train = median_seconds(iteration, repeats)
    print(f"train iteration batch 1, {crop}x{crop} (MSC): {t_train:.2f} s "
          f"= {1 / t_train:.3f} images/s")


if __name__ == "__main__":
    main()
