#!/usr/bin/env python
"""Peak memory and time of one training iteration, with and without activation checkpointing.

Run from the repository root:

    python -m benchmarks.bench_train [--batch 2] [--size 321] [--device cpu|cuda]
        [--granularities none,sqrt] [--iters 2] [--amp bf16|fp16] [--channels-last]
        [--json PATH] [--config config/cocostuff.yaml]

One iteration is what training does per sub-batch of the paper's protocol: the
full DeepLab v2 (ResNet-101, MSC at 0.5x and 0.75x) forward at the three
scales, the Caffe loss (``libs.training.loss.msc_loss_terms``), backward and the
SGD step of ``libs.training.optim``. The protocol's sub-batch is ``--batch 5``;
the default batch 2 keeps a CPU run to about 3 minutes on 2 cores. Each variant (a
``--granularities`` entry; ``none`` is checkpointing off) runs in a fresh child
process: one warm-up iteration, then the median of ``--iters`` timed ones.

Memory. CPU: the child's peak resident set (``VmHWM``, warm-up included), in total and as the
"step" increment over the resident set after building the model and optimizer
(activations, gradients, momentum, allocator slack). CUDA:
``torch.cuda.max_memory_allocated`` over the timed iterations, in total and
above the memory allocated after building the model. Times on CUDA are
synchronised. ``--amp`` (CUDA) runs the forward pass under autocast, fp16 with
a ``GradScaler``; ``--channels-last`` stores weights and inputs as NHWC.
The table gives each variant's memory and time relative to ``none``, also the
process CPU time ("cpu x", steadier than wall time on a shared machine), and
the first iteration's loss (the same for every variant: the forward pass is).
"""

import concurrent.futures
import multiprocessing
import os
import statistics
import time

import click
import torch

from libs.models import build_model
from libs.models.recompute import check_granularity, enable_activation_checkpointing
from libs.training.loss import msc_loss_terms
from libs.training.optim import build_optimizer
from libs.utils.atomic import write_json
from libs.utils.config import load_config

MIB = 2**20
IGNORE_LABEL = 255
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def proc_status_kib(field):
    """A ``kB`` field of /proc/self/status (Linux), e.g. ``VmHWM``; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_memory_mib(field):
    """Resident (``VmRSS``) or peak resident (``VmHWM``) memory of this process in MiB."""
    kib = proc_status_kib(field)
    if kib is None:  # not Linux: the peak is all getrusage knows (bytes on macOS)
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / MIB if sys.platform == "darwin" else peak / 1024
    return kib / 1024


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(spec, device):
    """The model (checkpointed or not), its optimizer, a batch and the autocast / scaler."""
    cfg = load_config(spec["config"])
    torch.backends.cudnn.benchmark = True  # as training does: the crop size is fixed
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    layout = torch.channels_last if spec["channels_last"] else torch.preserve_format
    model.to(device, memory_format=layout).train()
    if spec["granularity"] != "none":
        enable_activation_checkpointing(model, granularity=spec["granularity"])
    optimizer = build_optimizer(model, cfg.SOLVER)
    n, size = spec["batch"], spec["size"]
    images = torch.randn(n, 3, size, size).to(device, memory_format=layout)
    labels = torch.randint(0, cfg.DATASET.N_CLASSES, (n, size, size))
    labels[:, : size // 10] = IGNORE_LABEL  # some unlabelled pixels, as in real crops
    amp = spec["amp"]
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    return model, optimizer, images, labels.to(device), amp, scaler


def iteration(model, optimizer, images, labels, amp, scaler):
    """One training iteration; returns its loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=AMP_DTYPES.get(amp), enabled=amp is not None):
        outputs = model(images)
    outputs = [out.float() for out in outputs]
    terms = msc_loss_terms(outputs, labels, IGNORE_LABEL, model.scales, model.geometry)
    loss = terms.sum() / len(images)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def measure(spec):
    """Run one variant (in a child process); a dict of its times and memory."""
    device = torch.device(spec["device"])
    start = time.perf_counter()
    model, optimizer, images, labels, amp, scaler = build(spec, device)
    synchronize(device)
    t_build = time.perf_counter() - start
    if device.type == "cuda":
        baseline = torch.cuda.memory_allocated(device) / MIB
    else:
        baseline = cpu_memory_mib("VmRSS")
    args = (model, optimizer, images, labels, amp, scaler)
    first_loss = iteration(*args).item()  # warm-up (allocations, cuDNN autotuning)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(spec["iters"]):
        start, cpu_start = time.perf_counter(), time.process_time()
        iteration(*args)
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    extra = {}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / MIB
        extra["reserved_peak_mib"] = torch.cuda.max_memory_reserved(device) / MIB
    else:
        peak = cpu_memory_mib("VmHWM")
    seconds = statistics.median(times)
    return dict(spec, build_s=t_build, first_loss=first_loss, times_s=times,
                cpu_times_s=cpu_times, cpu_seconds_per_iteration=statistics.median(cpu_times),
                seconds_per_iteration=seconds, seconds_per_image=seconds / spec["batch"],
                baseline_mib=baseline, peak_mib=peak, step_peak_mib=peak - baseline,
                threads=torch.get_num_threads(), **extra)


def run_in_child(spec):
    """``measure(spec)`` in a fresh spawned process, so each variant's peak is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure, spec).result()


def add_ratios(results):
    """Each result's memory and time relative to the ``none`` variant (if it was run)."""
    plain = next((r for r in results if r["granularity"] == "none"), None)
    for r in results:
        if plain is not None:
            r["peak_ratio"] = r["peak_mib"] / plain["peak_mib"]
            r["step_peak_ratio"] = r["step_peak_mib"] / plain["step_peak_mib"]
            r["time_ratio"] = r["seconds_per_iteration"] / plain["seconds_per_iteration"]
            r["cpu_time_ratio"] = (r["cpu_seconds_per_iteration"]
                                   / plain["cpu_seconds_per_iteration"])
    return results


def print_table(results):
    print(f"\n{'checkpointing':<14}{'s/iter':>8}{'s/image':>9}{'peak MiB':>10}{'step MiB':>10}"
          f"{'peak x':>8}{'step x':>8}{'time x':>8}{'cpu x':>8}{'loss':>9}")
    for r in results:
        ratios = "".join(f"{r[k]:>8.2f}" if k in r else f"{'-':>8}"
                         for k in ("peak_ratio", "step_peak_ratio", "time_ratio", "cpu_time_ratio"))
        print(f"{str(r['granularity']):<14}{r['seconds_per_iteration']:>8.2f}"
              f"{r['seconds_per_image']:>9.2f}{r['peak_mib']:>10.0f}{r['step_peak_mib']:>10.0f}"
              f"{ratios}{r['first_loss']:>9.4f}")


def parse_granularities(text):
    """``"none,sqrt,2"`` -> ``["none", "sqrt", 2]``; a click error names an unknown one."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        value = int(part) if part.isdigit() else part
        try:
            found.append(value if value == "none" else check_granularity(value))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--granularities") from None
    return found


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default="config/cocostuff.yaml", show_default=True,
              help="The model and solver (config/toy.yaml for a quick smoke run).")
@click.option("--batch", default=2, show_default=True, help="Images per forward pass (protocol: 5).")
@click.option("--size", default=321, show_default=True, help="Crop side in pixels.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--granularities", default="none,sqrt", show_default=True,
              help="Comma-separated variants: none (off), block, stage, sqrt, or blocks per segment.")
@click.option("--iters", default=2, show_default=True, help="Timed iterations after one warm-up.")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Autocast the forward pass (CUDA only).")
@click.option("--channels-last", is_flag=True, help="NHWC weights and inputs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the results to this JSON file (atomically).")
def main(config_path, batch, size, device, granularities, iters, amp, channels_last, json_path):
    """Memory and time of a training iteration with and without activation checkpointing."""
    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    if amp is not None and device != "cuda":
        raise click.BadParameter("autocast is benchmarked on CUDA only", param_hint="--amp")
    variants = parse_granularities(granularities)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {device_name(device)}, load average "
          f"{load_before[0]:.2f}; batch {batch} x {size}x{size}, MSC, amp {amp or 'fp32'}, "
          f"channels_last {channels_last}", flush=True)
    results = []
    for granularity in variants:
        spec = dict(config=config_path, batch=batch, size=size, device=device, iters=iters,
                    granularity=granularity, amp=amp, channels_last=channels_last)
        results.append(run_in_child(spec))
        r = results[-1]
        print(f"  {granularity}: {r['seconds_per_iteration']:.2f} s/iteration, peak "
              f"{r['peak_mib']:.0f} MiB (step {r['step_peak_mib']:.0f} MiB)", flush=True)
    print_table(add_ratios(results))
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    if json_path:
        write_json({"device": device_name(device), "torch": torch.__version__,
                    "load_average": [load_before[0], load_after[0]], "results": results},
                   json_path)


if __name__ == "__main__":
    main()
