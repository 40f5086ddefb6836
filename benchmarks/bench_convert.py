"""Time and peak memory of convert.py on a full-size DeepLab v2 VOC12 caffemodel.

    python -m benchmarks.bench_convert [--keep DIR]    # from the repository root

Writes a full-depth ResNet-101 MSC caffemodel with random weights (the same
writer as the tests, ~180 MB), then

1. runs ``convert.py --dataset voc12`` on it in a child process and reports its
   wall time and peak resident memory (``ru_maxrss`` of the child);
2. in this process, times turning every blob of the parsed file into a tensor
   two ways: NumPy straight from the parsed protobuf field (what the converter
   does) and through a Python list (``torch.tensor(list(blob.data))``, the way
   converters commonly do it), and reports the ratio measured in this one run.
"""

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from libs.caffe import read_caffemodel
from tests.caffe_reference import deeplab_caffe_layers, write_caffemodel

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@click.command()
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the files here and keep them (default: a temporary folder).")
def main(keep):
    """Benchmark convert.py on a full-size VOC12 caffemodel."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        caffemodel, output = folder / "train2_iter_20000.caffemodel", folder / "voc12.pth"
        layers, t_build = _timed(lambda: deeplab_caffe_layers(seed=0))
        _, t_write = _timed(lambda: write_caffemodel(layers, caffemodel))
        del layers  # free ~170 MB before the conversion is measured
        size_mb = caffemodel.stat().st_size / 2**20
        print(f"fixture: {caffemodel.name} {size_mb:.0f} MiB "
              f"(random weights {t_build:.1f} s, write {t_write:.1f} s)")

        command = [sys.executable, str(ROOT / "convert.py"), "--dataset", "voc12",
                   "--caffemodel", str(caffemodel), "--output", str(output)]
        gnu_time = Path("/usr/bin/time")
        if gnu_time.exists():  # peak RSS of exactly this process
            command = [str(gnu_time), "-f", "maxrss_kib=%M"] + command
        run, t_convert = _timed(lambda: subprocess.run(command, cwd=ROOT, capture_output=True,
                                                       text=True))
        if run.returncode:
            raise click.ClickException(run.stderr.strip())
        reported = [line for line in run.stderr.splitlines() if line.startswith("maxrss_kib=")]
        if reported:
            peak_kib = int(reported[-1].split("=")[1])
        else:  # largest child so far; the only child of this script is convert.py
            peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"convert.py --dataset voc12: {t_convert:.1f} s wall (including Python and "
              f"torch start-up), peak RSS {peak_kib / 1024:.0f} MiB")
        print(f"output: {output.stat().st_size / 2**20:.0f} MiB")

        parsed, t_parse = _timed(lambda: read_caffemodel(caffemodel))
        blobs = [b for layer in parsed for b in layer.proto.blobs]
        _, t_numpy = _timed(lambda: [torch.from_numpy(np.array(b.data, np.float32))
                                     for b in blobs])
        _, t_list = _timed(lambda: [torch.tensor(list(b.data)) for b in blobs])
        print(f"parse {t_parse:.2f} s; blobs -> tensors: NumPy {t_numpy:.2f} s, "
              f"Python lists {t_list:.2f} s, ratio {t_list / t_numpy:.0f}x")


if __name__ == "__main__":
    main()
