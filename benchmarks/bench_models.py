"""DeepLab v2, v3 and v3+ side by side: parameters, GMACs and CPU time per forward at 513x513.

    python -m benchmarks.bench_models [--classes 21] [--repeats 2] [--threads N]

Each full ResNet-101 model (single scale: v2 without its MSC, as the other two)
is built once and, in eval mode under ``torch.inference_mode()``, runs one
warm-up forward and ``--repeats`` timed forwards of a 1x3x513x513 input; the
table gives the median and its ratio to v2's, all measured in this one run
(ratios are what carries over to another machine). Multiply-accumulates are
counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device
(convolutions and matrix products; FLOPs / 2), so counting costs no compute.
"""

import statistics
import time

import click
import torch

from libs.models import DeepLabV2_ResNet101_MSC, DeepLabV3_ResNet101, DeepLabV3Plus_ResNet101

SIDE = 513
MODELS = {
    "DeepLab v2 (single scale)": lambda n: DeepLabV2_ResNet101_MSC(n, msc_scales=()),
    "DeepLab v3 (OS16)": lambda n: DeepLabV3_ResNet101(n),
    "DeepLab v3 (OS8)": lambda n: DeepLabV3_ResNet101(n, output_stride=8,
                                                      atrous_rates=(12, 24, 36)),
    "DeepLab v3+ (OS16)": lambda n: DeepLabV3Plus_ResNet101(n),
}


def gmacs(build, n_classes):
    """Multiply-accumulates (in 1e9) of one 513x513 forward, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build(n_classes).eval()
        x = torch.empty(1, 3, SIDE, SIDE)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def forward_seconds(model, repeats):
    """Median wall time of ``repeats`` forwards after one warm-up."""
    x = torch.randn(1, 3, SIDE, SIDE)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@click.command()
@click.option("--classes", "n_classes", default=21, show_default=True)
@click.option("--repeats", default=2, show_default=True, help="Timed forwards per model.")
@click.option("--threads", type=int, default=None, help="torch threads (default: torch's).")
def main(n_classes, repeats, threads):
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    for name, build in MODELS.items():
        model = build(n_classes).eval()
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, params, gmacs(build, n_classes), forward_seconds(model, repeats)))
        del model
    base = rows[0][3]
    print(f"{n_classes} classes, 1x3x{SIDE}x{SIDE}, {torch.get_num_threads()} threads, "
          f"median of {repeats} forwards")
    print(f"{'model':<28} {'parameters':>12} {'GMACs':>8} {'s/forward':>10} {'vs v2':>6}")
    for name, params, macs, seconds in rows:
        print(f"{name:<28} {params:>12,} {macs:>8.1f} {seconds:>10.2f} {seconds / base:>6.2f}")


if __name__ == "__main__":
    main()
