"""The two backends of the exact dense CRF side by side, in one run.

    python -m benchmarks.bench_crf_backends                      # torch on the CPU
    python -m benchmarks.bench_crf_backends --device cuda        # torch on the GPU

On ``--n-images`` synthetic 513x513 maps (``bench_crf.realistic_sample``) at
21 and 182 labels, with the CRF of config/cocostuff.yaml (10 iterations):
seconds per image of one pydensecrf process and of the torch backend, their
ratio, the torch posterior's largest difference from pydensecrf's and the share
of pixels both label alike, and peak memory (of the GPU for CUDA; on the CPU
the growth of a fresh process's resident memory while it runs one image).
"""

import multiprocessing
import resource
import time
from pathlib import Path

import click
import numpy as np
import torch

from benchmarks.bench_crf import realistic_sample
from libs.inference.crf import DenseCRF
from libs.inference.crf_torch import torch_crf_posterior
from libs.utils.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "config" / "cocostuff.yaml"


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_torch(crf, image, prob, device):
    """(posterior as NumPy, seconds, peak MiB) of the torch backend on ``device``."""
    image_t, prob_t = torch.from_numpy(image).to(device), torch.from_numpy(prob).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    posterior = torch_crf_posterior(crf, image_t, prob_t)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return posterior.cpu().numpy(), seconds, peak


def _grow(queue, crf, seed, n_labels, size):
    image, prob, _ = realistic_sample(np.random.default_rng(seed), n_classes=n_labels, size=size)
    before = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    torch_crf_posterior(crf, torch.from_numpy(image), torch.from_numpy(prob))
    queue.put(rss_mib() - before)


def cpu_peak(crf, seed, n_labels, size):
    """How far a fresh process's peak resident memory (MiB) rises above its resident memory while
    it runs one image (Linux; spawned, not forked: a fork after torch's thread pool started may
    hang). The child makes its own sample, since unpickling one would set the peak itself."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_grow, args=(queue, crf, seed, n_labels, size))
    process.start()
    growth = queue.get()
    process.join()
    return growth


@click.command()
@click.option("--device", "device_name", default="cpu", show_default=True,
              help="Where the torch backend runs (cpu, cuda).")
@click.option("--n-images", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--labels", default="21,182", show_default=True, help="Label counts to time.")
@click.option("--size", default=513, show_default=True)
def main(device_name, n_images, labels, size):
    """Time pydensecrf (one process) and the torch backend on the same maps."""
    device = torch.device(device_name)
    cfg = load_config(CONFIG)
    crf = DenseCRF.from_config(cfg.CRF).with_prune_threshold(None)
    print(f"{crf}; torch backend on {device}, {torch.get_num_threads()} CPU threads")
    print("labels  pydensecrf s/img  torch s/img  speed-up  max |dQ|  same label  peak MiB")
    for n_labels in (int(n) for n in labels.split(",")):
        rng = np.random.default_rng(0)
        times, diffs, agree, peaks = {"pydensecrf": [], "torch": []}, [], [], []
        for _ in range(n_images):
            image, prob, _ = realistic_sample(rng, n_classes=n_labels, size=size)
            start = time.process_time()  # one single-threaded process: its CPU time
            reference = crf.infer(image, prob)
            times["pydensecrf"].append(time.process_time() - start)
            if device.type == "cuda" and not diffs:
                run_torch(crf, image, prob, device)  # the first call loads the CUDA kernels
            posterior, seconds, peak = run_torch(crf, image, prob, device)
            times["torch"].append(seconds)
            diffs.append(float(np.abs(posterior - reference).max()))
            agree.append(float((posterior.argmax(0) == reference.argmax(0)).mean()))
            peaks.append(peak if peak is not None else cpu_peak(crf, n_labels, n_labels, size))
        pdc, tch = np.mean(times["pydensecrf"]), np.mean(times["torch"])
        print(f"{n_labels:6d}  {pdc:16.2f}  {tch:11.3f}  {pdc / tch:7.2f}x  {max(diffs):8.1e}  "
              f"{100 * np.mean(agree):9.4f}%  {max(peaks):8.0f}")


if __name__ == "__main__":
    main()
