"""tests/gpu/run.sh on a machine without CUDA: it runs, skips the CUDA parts, ends with the table."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour of the script")
def test_gpu_script_skips_cleanly_without_cuda_and_prints_its_table(tmp_path):
    results = tmp_path / "gpu.json"
    run = subprocess.run(["bash", "tests/gpu/run.sh", str(results)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert "GPU check on no CUDA device" in lines
    report = json.loads(results.read_text())
    names = [row["test"] for row in report["tests"]]
    # every CUDA test is listed, each skipped with the reason
    assert "test_cuda::test_fp16_resume_restores_the_grad_scaler" in names
    assert "test_cuda::test_two_process_torchrun_with_nccl" in names
    assert len(names) >= 10
    assert all(row["outcome"] == "skipped" and "needs a CUDA GPU" in row["detail"]
               for row in report["tests"])
    assert report["benchmark"] == [{"variant": "CUDA benchmark", "skipped": "no CUDA device "
                                    "(torch.cuda.is_available() is false)"}]
    assert any(line.startswith("CUDA benchmark") and "skipped: no CUDA device" in line
               for line in lines)
    assert lines[-2] == f"0 passed, 0 failed, 0 error, {len(names)} skipped"
    assert lines[-1] == f"results: {results}"


def test_gpu_script_needs_a_results_path():
    run = subprocess.run(["bash", "tests/gpu/run.sh"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode != 0 and "usage: bash tests/gpu/run.sh RESULTS.json" in run.stderr
