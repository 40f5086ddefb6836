"""The GPU paths of training and inference, on a real CUDA device (``pytest -m cuda``).

Every test is marked ``cuda`` and skipped where ``torch.cuda.is_available()``
is false (tests/conftest.py), so the CPU suite collects them without running
them. ``tests/gpu/run.sh`` runs them and then the CUDA benchmark. The model is
the narrow test network, so the whole module takes well under a minute.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from libs.models import build_model
from libs.models.prepared import prepare_for_inference
from libs.training.acceleration import SCALER_KEY, apply_model_options, precision_for
from libs.training.loop import Launch
from libs.training.loop import train as run_training
from tests.support_training import train_step
from tests.tiny_model import narrow, random_batch

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[2]
CUDA = torch.device("cuda")


def small(cfg, **solver):
    return narrow(cfg, base_width=16, **solver)


def batch(n_classes):
    return random_batch(n_classes, n=4, size=81)


def step_gradients(cfg, amp=None, memory_format=torch.preserve_format, **solver):
    """Loss and gradients of one training step of the same weights on the GPU."""
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).to(CUDA).train()
    apply_model_options(model, small(cfg, **solver).SOLVER, CUDA)
    precision = precision_for(amp, CUDA, log=lambda *_: None)
    loss, _ = train_step(model, batch(cfg.DATASET.N_CLASSES), CUDA, precision.autocast,
                         precision.scaler, memory_format)  # the scaler's step unscales the gradients
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    return loss, grads


def relative(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("amp, tolerance", [("bf16", 0.1), ("fp16", 0.02)])
def test_mixed_precision_step_is_finite_and_close_to_fp32(toy_cfg, amp, tolerance):
    loss32, grads32 = step_gradients(small(toy_cfg))
    loss, grads = step_gradients(small(toy_cfg), amp)
    assert torch.isfinite(torch.tensor(loss)) and loss == pytest.approx(loss32, rel=tolerance)
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    head = "base.aspp.c0.weight"
    assert relative(grads[head], grads32[head]) < tolerance


def test_channels_last_and_checkpointing_give_the_same_gradients(toy_cfg):
    loss, reference = step_gradients(small(toy_cfg))
    for options in ({"CHANNELS_LAST": True}, {"ACTIVATION_CHECKPOINTING": True}):
        fmt = torch.channels_last if options.get("CHANNELS_LAST") else torch.preserve_format
        other_loss, grads = step_gradients(small(toy_cfg), None, fmt, **options)
        assert other_loss == pytest.approx(loss, rel=1e-4), options
        for name, grad in grads.items():
            assert relative(grad, reference[name]) < 1e-3, (options, name)


def test_fp16_resume_restores_the_grad_scaler(toy_cfg, tmp_path):
    cfg = small(toy_cfg, AMP="fp16", ITER_MAX=4, ITER_SNAP=2, ITER_TB=10)
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "full")
    run_training(cfg, CUDA, progress=False)
    out = tmp_path / "full" / cfg.EXP.ID
    final = torch.load(out / "checkpoint_final.pth", weights_only=True)
    assert SCALER_KEY in final and final[SCALER_KEY]["scale"] > 0
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "resumed")
    run_training(cfg, CUDA, resume=out / "checkpoint_2.pth", progress=False)
    resumed = torch.load(tmp_path / "resumed" / cfg.EXP.ID / "checkpoint_final.pth",
                         weights_only=True)
    assert resumed[SCALER_KEY] == final[SCALER_KEY]
    for key, value in final["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-3, atol=1e-5)


def test_data_parallel_over_the_visible_gpus(toy_cfg, tmp_path):
    cfg = small(toy_cfg, ITER_MAX=2, ITER_SNAP=2, ITER_TB=10)
    cfg.EXP.OUTPUT_DIR = str(tmp_path)
    model = run_training(cfg, CUDA, progress=False, launch=Launch(data_parallel=True))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (tmp_path / cfg.EXP.ID / "checkpoint_final.pth").is_file()


def test_two_process_torchrun_with_nccl(toy_cfg, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs one GPU per process; this machine has "
                    f"{torch.cuda.device_count()} (two processes cannot share one GPU under NCCL)")
    cfg = small(toy_cfg, ITER_MAX=2, ITER_SNAP=2, ITER_TB=10, ITER_SIZE=1)
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "out")
    cfg.EXP.LOG_DIR = str(tmp_path / "runs")
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    command = (f"{torchrun} --standalone --nproc_per_node=2 train.py --config {config} --no-eval")
    result = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / cfg.EXP.ID / "checkpoint_final.pth").is_file()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_prepared_inference_on_the_gpu(toy_cfg, precision):
    torch.manual_seed(0)
    model = build_model(small(toy_cfg).MODEL, 8).to(CUDA).eval()
    prepared = prepare_for_inference(model, precision)
    x = torch.randn(2, 3, 97, 129, device=CUDA)
    with torch.inference_mode():
        reference, out = model(x), prepared(x)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    tolerance = 1e-4 if precision == "fp32" else 5e-2
    assert ((out - reference).abs().max() / reference.abs().max()).item() < tolerance
    agreement = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement > (0.999 if precision == "fp32" else 0.9)
