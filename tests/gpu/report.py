"""The GPU check in one table: the CUDA tests, then the training benchmark on CUDA.

    python -m tests.gpu.report --json results.json      (tests/gpu/run.sh calls this)

Part 1 runs ``pytest -m cuda`` (tests/gpu/test_cuda.py and every other test
marked ``cuda``) and lists each test as passed, failed or skipped with the
reason. Part 2, only where CUDA is available, times one training iteration of
the full ResNet-101 MSC at the protocol's sub-batch (5 x 321x321) for fp32 and
bf16 x activation checkpointing off/on x channels_last off/on
(benchmarks/bench_train.py, each variant in its own process), with
images/s and peak memory; then, on CUDA, benchmarks/bench_crf_backends.py (the dense CRF's two
backends). Everything skipped says why. The results also go to
the JSON file, written atomically. Exit code 1 if a test failed.
"""

import itertools
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import click
import torch

from libs.utils.atomic import write_json

REPO = Path(__file__).resolve().parents[2]
PROTOCOL_BATCH, CROP = 5, 321
PROTOCOL_IMAGES = 20000 * 10  # COCO-Stuff 10k: 20k iterations of 10 images
BENCH_ITERS = 5


def run_cuda_tests():
    """``pytest -m cuda`` over the test files that mark tests ``cuda`` (collecting only those
    takes seconds, not the whole suite's imports): a list of {test, outcome, detail}, and
    pytest's exit code."""
    files = [str(p.relative_to(REPO)) for p in sorted((REPO / "tests").rglob("test_*.py"))
             if "mark.cuda" in p.read_text()]
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "cuda.xml"
        command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={xml}", *files]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        rows = parse_junit(xml) if xml.is_file() else []
    if not rows:
        rows = [{"test": "pytest -m cuda", "outcome": "error",
                 "detail": (result.stdout + result.stderr).strip().splitlines()[-1:] or ""}]
    return rows, result.returncode


def parse_junit(path):
    rows = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                detail = (node.get("message") or "").splitlines()[0][:100] if node.get(
                    "message") else ""
                break
        rows.append({"test": name, "outcome": outcome, "detail": detail})
    return rows


def run_benchmark(config):
    """One row per variant of the CUDA training benchmark, or a single 'skipped' row."""
    if not torch.cuda.is_available():
        return [{"variant": "CUDA benchmark", "skipped": "no CUDA device "
                 "(torch.cuda.is_available() is false)"}]
    from benchmarks.bench_train import run_in_child

    variants = [(amp, checkpointing, channels_last, PROTOCOL_BATCH) for amp, checkpointing,
                channels_last in itertools.product((None, "bf16"), (False, True), (False, True))]
    # The same update as 5 x ITER_SIZE 2 (the loss is split-invariant), twice the work per launch.
    variants.append(("bf16", False, True, 2 * PROTOCOL_BATCH))
    return [bench_row(config, *variant, run_in_child) for variant in variants]


def bench_row(config, amp, checkpointing, channels_last, batch, run_in_child):
    spec = dict(config=config, batch=batch, size=CROP, device="cuda", iters=BENCH_ITERS,
                granularity="sqrt" if checkpointing else "none", amp=amp,
                channels_last=channels_last)
    name = (f"{amp or 'fp32'}, checkpointing {'on' if checkpointing else 'off'}, "
            f"{'channels_last' if channels_last else 'contiguous'}, batch {batch}")
    try:
        r = run_in_child(spec)
    except Exception as e:  # an out-of-memory variant is a result, not the end of the report
        return {"variant": name, "skipped": f"{type(e).__name__}: {str(e)[:80]}"}
    return {"variant": name, "images_per_s": batch / r["seconds_per_iteration"],
            "peak_gib": r["peak_mib"] / 1024, "loss": r["first_loss"],
            "protocol_minutes": PROTOCOL_IMAGES / (batch / r["seconds_per_iteration"]) / 60}


def print_table(tests, bench, device):
    print(f"\nGPU check on {device}")
    print(f"\n{'test':<72}{'result':<9}detail")
    for row in tests:
        print(f"{row['test'][:71]:<72}{row['outcome']:<9}{row['detail']}")
    print(f"\n{'training benchmark (321x321, MSC, full ResNet-101)':<64}"
          f"{'images/s':>10}{'peak GiB':>10}{'20k-iter min':>14}")
    for row in bench:
        if "skipped" in row:
            print(f"{row['variant']:<64}skipped: {row['skipped']}")
        else:
            print(f"{row['variant']:<64}{row['images_per_s']:>10.1f}{row['peak_gib']:>10.2f}"
                  f"{row['protocol_minutes']:>14.1f}")
    counts = {k: sum(r["outcome"] == k for r in tests) for k in ("passed", "FAILED", "ERROR",
                                                                  "skipped")}
    print("\n" + ", ".join(f"{v} {k.lower()}" for k, v in counts.items()))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the results (JSON).")
@click.option("--config", default="config/cocostuff.yaml", show_default=True,
              help="Model of the benchmark (its MODEL section).")
@click.option("--skip-benchmark", is_flag=True, help="Only the CUDA tests.")
def main(json_path, config, skip_benchmark):
    """Run the CUDA tests and the CUDA training benchmark; print one table; write JSON."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{torch.cuda.device_count()} GPU(s) visible")
    tests, code = run_cuda_tests()
    bench = ([{"variant": "CUDA benchmark", "skipped": "--skip-benchmark"}] if skip_benchmark
             else run_benchmark(config))
    print_table(tests, bench, device)
    if torch.cuda.is_available() and not skip_benchmark:  # pydensecrf vs the torch CRF on CUDA
        subprocess.run([sys.executable, "-m", "benchmarks.bench_crf_backends", "--device", "cuda",
                        "--n-images", "2"], cwd=REPO)
    write_json({"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
                "visible_gpus": torch.cuda.device_count(), "cpu_count": os.cpu_count(),
                "tests": tests, "pytest_exit_code": code, "benchmark": bench}, json_path)
    print(f"results: {json_path}")
    failed = any(r["outcome"] in ("FAILED", "ERROR") for r in tests)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
