#!/usr/bin/env python
"""Inference speed and agreement: the plain module, prepare_for_inference, bf16, ONNX Runtime.

    python -m benchmarks.bench_inference [--repeats 3] [--skip-agreement]

Time (full ResNet-101, 182 classes, random weights with non-trivial frozen
BatchNorm statistics; the cost does not depend on the values): 513x513 through
the MSC model and 321x321 through the single-scale network, every variant
timed in the same rounds, interleaved, so machine load hits all of them alike.
For each: the median time, the speed-up over the plain module, the largest
relative error of the logits (max |a - b| / max |b|) against the plain fp32
module, and the share of the CPU's measured fp32 matrix-multiplication peak
the convolutions reach.

Agreement (the quick-start model, trained by ``train.py --config
config/toy.yaml`` if its checkpoint is missing): the share of pixels whose
argmax equals the plain fp32 model's over the synthetic test images, the way
eval.py scores them.
"""

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import torch
import torch.nn as nn

from libs.models import build_model
from libs.models.prepared import prepare_for_inference
from libs.utils.config import load_config
from libs.utils.device import cpu_flags, cpu_native_bf16

from .inference_variants import agreement_table, onnx_variant, toy_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]


def randomise_batchnorm(model, seed=0):
    """Frozen BatchNorm far from the identity, so folding it is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
    return model


def conv_flops(model, x):
    """Multiply-add FLOPs (2 per MAC) of every convolution in one forward pass of ``x``."""
    total = [0]

    def count(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += 2 * k * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(x)
    for hook in hooks:
        hook.remove()
    return total[0]


def matmul_peak_gflops(sizes=(1024, 2048, 3072), repeats=5):
    """The best fp32 matrix-multiplication rate of this CPU (GFLOP/s), a ceiling for convolutions.

    The best of several sizes and repeats: a busy machine only lowers a sample.
    """
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        fastest = min(timed_once(lambda: torch.mm(a, b)) for _ in range(repeats))
        best = max(best, 2 * size ** 3 / fastest / 1e9)
    return best


def timed_once(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def relative_error(out, ref):
    return ((out.float() - ref).abs().max() / ref.abs().max()).item()


def variants_for(net, example, workdir, log):
    """name -> callable on a tensor: what this machine can run."""
    variants = {"plain": net, "prepared fp32": prepare_for_inference(net, "fp32")}
    supported, reason = cpu_native_bf16()
    if supported:
        variants["prepared bf16"] = prepare_for_inference(net, "bf16")
    else:
        log(f"  bf16 skipped: {reason}")
    onnx = onnx_variant(net, example, workdir, log)
    if onnx is not None:
        variants["ONNX Runtime"] = onnx
    return variants


def time_case(name, net, size, repeats, peak, workdir, log):
    """One table (a model at an input size): median time, speed-up, error, share of peak."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    flops = conv_flops(net, x)
    variants = variants_for(net, x, workdir, log)
    times = {key: [] for key in variants}
    with torch.inference_mode():
        reference = net(x)
        errors = {key: relative_error(f(x), reference) for key, f in variants.items()}  # warm-up
        for _ in range(repeats):
            for key, f in variants.items():
                times[key].append(timed_once(lambda: f(x)))
    plain = statistics.median(times["plain"])
    log(f"\n{name} ({flops / 1e9:.0f} GFLOP of convolutions per image)")
    log(f"| variant | median s | speed-up | max rel. error | GFLOP/s | share of fp32 peak |")
    log("|---|---:|---:|---:|---:|---:|")
    for key in variants:
        median = statistics.median(times[key])
        rate = flops / median / 1e9
        log(f"| {key} | {median:.2f} | {plain / median:.2f}x | {errors[key]:.1e} | {rate:.0f} | "
            f"{rate / peak:.0%} |")


def machine_line():
    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{torch.get_num_threads()} torch threads, flags: {', '.join(shown) or 'unknown'}; "
            f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}")


@click.command()
@click.option("--config", "config_path", default=str(REPO_ROOT / "config" / "cocostuff.yaml"),
              show_default=True, help="Model to time (its MODEL section, 182 classes).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--skip-agreement", is_flag=True, help="Only the timing tables.")
@click.option("--skip-msc", is_flag=True, help="Skip the (slow) 513x513 MSC table.")
def main(config_path, repeats, skip_agreement, skip_msc):
    """Time the inference variants and measure their argmax agreement."""
    cfg = load_config(config_path)
    print(machine_line())
    peak = matmul_peak_gflops()
    print(f"fp32 matrix-multiplication peak: {peak:.0f} GFLOP/s")
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)).eval()
    with tempfile.TemporaryDirectory() as workdir:
        if not skip_msc:
            time_case("MSC at 513x513", model, 513, repeats, peak, Path(workdir) / "msc", print)
        time_case("single scale at 321x321", model.base, 321, repeats, peak,
                  Path(workdir) / "single", print)
        if not skip_agreement:
            toy_cfg, checkpoint = toy_checkpoint(REPO_ROOT, print)
            agreement_table(toy_cfg, checkpoint, Path(workdir) / "toy", print)


if __name__ == "__main__":
    main()
