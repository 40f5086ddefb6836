"""Training at scale on the CPU: mixed-precision settings and refusals, the fp16 loss scaler in
checkpoints, channels-last, the torch.compile fallback, activation checkpointing, and the
images/s and peak-memory logging. The GPU side is checked by tests marked ``cuda``."""

import contextlib
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from tests.support_training import train_step
from tests.tiny_model import narrow, random_batch

import libs.training.acceleration
import libs.training.loop
import libs.utils.device
import train
from libs.models import build_model
from libs.training.acceleration import (SCALER_KEY, EagerFallback, Precision, apply_model_options,
                                        compile_model, disabled_scaler, precision_for)
from libs.training.checkpoint import restore_training_state, save_checkpoint
from libs.utils.errors import ConfigError
from libs.training.loop import train as run_training
from libs.training.runlog import Throughput, peak_memory_gib, postfix
from libs.training.optim import build_optimizer

CPU = torch.device("cpu")
NO_BF16 = {"fpu", "sse2", "avx2", "fma"}  # a CPU that would emulate bf16
NATIVE_BF16 = NO_BF16 | {"avx512f", "avx512_bf16"}


small = narrow  # the toy config with a narrow model (tests/tiny_model.py)


def simulate_cpu(monkeypatch, flags):
    monkeypatch.setattr(libs.utils.device, "cpu_flags", lambda: set(flags))


batch = random_batch  # tests/tiny_model.py


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --- SOLVER.AMP on the CPU -----------------------------------------------------------------------

def test_fp16_is_refused_on_the_cpu_in_one_line(monkeypatch):
    simulate_cpu(monkeypatch, NATIVE_BF16)  # even where bf16 would be allowed
    with pytest.raises(ConfigError) as e:
        precision_for("fp16", CPU)
    assert str(e.value) == ("SOLVER.AMP: fp16 needs CUDA, and this run is on the cpu; use null "
                            "(or bf16 on a CPU with AMX or AVX512-BF16)")
    assert e.value.loaded  # a value of the config: the command line names the file


def test_bf16_is_refused_on_a_cpu_without_native_bf16(monkeypatch):
    simulate_cpu(monkeypatch, NO_BF16)
    with pytest.raises(ConfigError) as e:
        precision_for("bf16", CPU)
    assert str(e.value) == ("SOLVER.AMP: bf16 on the cpu: the CPU has neither AMX nor "
                            "AVX512-BF16 (bf16 would be emulated, ~100x slower); use null")
    simulate_cpu(monkeypatch, NATIVE_BF16)
    precision = precision_for("bf16", CPU, log=lambda *_: None)
    assert precision.amp == "bf16" and not precision.scaler.is_enabled()


def test_no_amp_is_plain_fp32():
    precision = precision_for(None, CPU)
    assert precision.autocast is contextlib.nullcontext and not precision.scaler.is_enabled()


def test_the_script_refuses_cpu_amp_with_one_line_naming_the_config(toy_cfg, tmp_path, monkeypatch):
    simulate_cpu(monkeypatch, NO_BF16)
    for amp, reason in [("fp16", "fp16 needs CUDA"), ("bf16", "neither AMX nor AVX512-BF16")]:
        cfg = small(toy_cfg, AMP=amp)
        path = tmp_path / f"{amp}.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict()))
        result = CliRunner().invoke(train.main, ["--config", str(path), "--no-cuda", "--no-eval"])
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: SOLVER.AMP: {amp}")
        assert reason in lines[0]
    assert not (Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID).exists()  # refused before training


def test_bf16_autocast_on_a_cpu_with_native_bf16(toy_cfg, monkeypatch, one_torch_thread):
    """The forward pass computes in bf16 (emulated here: tiny inputs), the loss in fp32."""
    simulate_cpu(monkeypatch, NATIVE_BF16)
    cfg = small(toy_cfg)
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, 8).train()
    sub_batches = batch(8, n=1, size=25)
    dtypes = []
    hook = model.base.aspp.c0.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    reference, _ = train_step(model, sub_batches)
    precision = precision_for("bf16", CPU, log=lambda *_: None)
    model.zero_grad(set_to_none=True)
    loss, fused = train_step(model, sub_batches, CPU, precision.autocast, precision.scaler)
    hook.remove()
    assert dtypes == [torch.float32] * 3 + [torch.bfloat16] * 3  # three MSC scales each
    assert fused.dtype == torch.float32
    assert torch.isfinite(torch.tensor(loss)) and loss == pytest.approx(reference, rel=0.05)
    assert all(torch.isfinite(g).all() for g in gradients(model).values())


# --- the fp16 loss scaler in checkpoints ---------------------------------------------------------

def scaler_after_a_skipped_step(model, optimizer):
    """A CPU GradScaler that has halved its scale once: an inf gradient skipped the step."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    weight = model.base.aspp.c0.weight
    before = weight.detach().clone()
    scaler.scale(weight.sum() * float("inf")).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(weight, before)  # skipped, not applied
    assert scaler.get_scale() == 512.0
    return scaler


def test_grad_scaler_state_round_trips_through_a_checkpoint(toy_cfg, tmp_path, capsys):
    cfg = small(toy_cfg)
    model = build_model(cfg.MODEL, 8)
    optimizer = build_optimizer(model, cfg.SOLVER)
    scaler = scaler_after_a_skipped_step(model, optimizer)
    save_checkpoint(tmp_path / "fp16.pth", model, optimizer, 3, {}, scaler)
    save_checkpoint(tmp_path / "fp32.pth", model, optimizer, 3, {}, disabled_scaler())
    save_checkpoint(tmp_path / "old.pth", model, optimizer, 3, {})
    fp16, fp32, old = (torch.load(tmp_path / f"{n}.pth", weights_only=True)
                       for n in ("fp16", "fp32", "old"))
    assert fp16[SCALER_KEY] == scaler.state_dict() and fp16[SCALER_KEY]["scale"] == 512.0
    assert SCALER_KEY not in fp32 and SCALER_KEY not in old  # a disabled scaler has no state

    restored = torch.amp.GradScaler("cpu", init_scale=1024.0)
    restore_training_state(fp16, build_optimizer(model, cfg.SOLVER), restored)
    assert restored.state_dict() == scaler.state_dict()
    assert capsys.readouterr().out == ""

    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0)
    restore_training_state(old, build_optimizer(model, cfg.SOLVER), fresh)  # no key: resumes
    assert fresh.get_scale() == 1024.0
    assert "no fp16 loss-scaler state" in capsys.readouterr().out

    off = disabled_scaler()
    restore_training_state(fp16, build_optimizer(model, cfg.SOLVER), off)  # fp16 -> fp32 run
    restore_training_state(fp16, build_optimizer(model, cfg.SOLVER))
    assert not off.is_enabled() and off.state_dict() == {}


def test_a_scaled_run_steps_through_the_scaler_and_resumes_its_scale(toy_cfg, tmp_path,
                                                                      monkeypatch, one_torch_thread):
    """Loss scaling by a power of two is exact in fp32: the weights equal the unscaled run's,
    the checkpoint carries the scaler, and --resume continues its growth count."""
    cfg = small(toy_cfg, ITER_MAX=2, ITER_SNAP=1, ITER_TB=10)
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "plain")
    plain = run_training(cfg, CPU, progress=False).state_dict()

    def scaled(amp, device, log=print):  # fp16's loss scaling without fp16 (CPU GradScaler)
        return Precision(contextlib.nullcontext, torch.amp.GradScaler("cpu", init_scale=2.0**10,
                                                                      growth_interval=10**6))
    monkeypatch.setattr(libs.training.loop, "precision_for", scaled)
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "scaled")
    out = tmp_path / "scaled" / cfg.EXP.ID
    model = run_training(cfg, CPU, progress=False)
    for key, value in plain.items():
        assert torch.equal(model.state_dict()[key], value), key
    final = torch.load(out / "checkpoint_final.pth", weights_only=True)
    assert final[SCALER_KEY]["scale"] == 1024.0 and final[SCALER_KEY]["_growth_tracker"] == 2

    cfg.EXP.OUTPUT_DIR = str(tmp_path / "resumed")
    run_training(cfg, CPU, resume=out / "checkpoint_1.pth", progress=False)
    resumed = torch.load(tmp_path / "resumed" / cfg.EXP.ID / "checkpoint_final.pth",
                         weights_only=True)
    assert resumed[SCALER_KEY] == final[SCALER_KEY]
    for key, value in final["model"].items():
        assert torch.equal(resumed["model"][key], value), key


# --- layout, compilation, activation checkpointing -----------------------------------------------

def test_channels_last_gives_the_loss_and_gradients_of_the_contiguous_layout(toy_cfg,
                                                                             one_torch_thread):
    cfg = small(toy_cfg)
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, 8).train()
    sub_batches = batch(8)
    loss, _ = train_step(model, sub_batches)
    reference = gradients(model)
    model.zero_grad(set_to_none=True)
    apply_model_options(model, small(toy_cfg, CHANNELS_LAST=True).SOLVER, CPU)
    conv = model.base.backbone.conv1.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    seen = []
    hook = model.base.backbone.conv1.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    loss_nhwc, _ = train_step(model, sub_batches, CPU,
                              memory_format=torch.channels_last)
    hook.remove()
    assert seen[0] is True  # the full-scale input went in as NHWC
    assert loss_nhwc == pytest.approx(loss, rel=1e-5)
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_compile_failures_fall_back_to_eager_with_one_notice(monkeypatch):
    net = torch.nn.Linear(3, 2)
    net.scales = [0.5]
    x = torch.randn(4, 3)
    notes = []

    def refuse(model, *args, **kwargs):
        raise RuntimeError("Dynamo is not supported here\nsecond line")

    monkeypatch.setattr(torch, "compile", refuse)
    assert compile_model(net, True, notes.append) is net
    assert notes == ["SOLVER.COMPILE: torch.compile failed (RuntimeError: Dynamo is not "
                     "supported here); training continues without it."]
    assert compile_model(net, False, notes.append) is net and len(notes) == 1

    def broken(*args):
        raise AssertionError("inductor: no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: broken)
    notes.clear()
    wrapped = compile_model(net, True, notes.append)
    assert isinstance(wrapped, EagerFallback) and wrapped.scales == [0.5]
    assert torch.equal(wrapped(x), net(x)) and torch.equal(wrapped(x), net(x))
    assert notes == ["SOLVER.COMPILE: the compiled model failed (AssertionError: inductor: no "
                     "C++ compiler); training continues without torch.compile."]


class FailingBackward(torch.autograd.Function):
    """Identity forward, a backward that fails: a backward graph the compiler cannot build."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward compilation failed")


def test_a_compiled_backward_failure_reruns_the_first_step_eagerly(monkeypatch):
    torch.manual_seed(0)
    net, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    net(x).square().sum().backward()
    expected = net.weight.grad.clone()
    net.zero_grad(set_to_none=True)
    monkeypatch.setattr(torch, "compile",
                        lambda model, *a, **k: (lambda inp: FailingBackward.apply(model(inp))))
    notes, resets = [], []
    wrapped = compile_model(net, True, notes.append)

    def step():
        wrapped(x).square().sum().backward()
        return "done"

    def reset():
        resets.append(net.weight.grad)
        net.zero_grad(set_to_none=True)

    assert wrapped.guard_first_step(step, reset) == "done"
    assert resets == [None]  # the failed backward left no gradient; reset ran once
    assert torch.equal(net.weight.grad, expected) and wrapped.compiled is None
    assert notes == ["SOLVER.COMPILE: the compiled model failed (RuntimeError: backward "
                     "compilation failed); training continues without torch.compile."]
    with pytest.raises(ZeroDivisionError):  # an eager failure is a real error
        wrapped.guard_first_step(lambda: 1 / 0, reset)
    assert len(notes) == 1 and len(resets) == 1


def test_activation_checkpointing_is_applied_through_the_models_helper(toy_cfg, monkeypatch):
    cfg = small(toy_cfg, ACTIVATION_CHECKPOINTING=True)
    model = build_model(cfg.MODEL, 8)
    calls = []
    monkeypatch.setattr(libs.training.acceleration, "enable_activation_checkpointing",
                        calls.append)
    assert apply_model_options(model, cfg.SOLVER, CPU) is model and calls == [model]
    apply_model_options(model, small(toy_cfg, ACTIVATION_CHECKPOINTING=False).SOLVER, CPU)
    assert calls == [model]


# --- throughput and memory -----------------------------------------------------------------------

def test_throughput_meter_and_postfix():
    meter = Throughput(window=2)
    assert meter.add(10, 2.0) == 5.0 and meter.add(10, 0.5) == 20.0
    meter.add(30, 1.5)  # the first iteration leaves the window
    assert meter.value == pytest.approx(40 / 2.0)
    assert postfix(0.12345, 2.5e-4, 19.87, 1.5) == {
        "loss": "0.1235", "lr": "0.00025", "img/s": "19.9", "mem": "1.50GiB"}
    assert "mem" not in postfix(0.1, 1e-3, 2.0, None)
    peak = peak_memory_gib(CPU)
    assert 0.01 < peak < 64  # this process's peak resident set, in GiB


def test_a_run_logs_images_per_second_and_peak_memory(toy_cfg, monkeypatch, capsys,
                                                      one_torch_thread):
    """Channels-last and a compile that fails at its first call, end to end, with the bar on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def broken(*args):
        raise RuntimeError("backend failed")

    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: broken)
    cfg = small(toy_cfg, ITER_MAX=2, ITER_SNAP=10, ITER_TB=10, CHANNELS_LAST=True, COMPILE=True)
    run_training(cfg, CPU, progress=True)
    captured = capsys.readouterr()
    assert captured.out.count("SOLVER.COMPILE: the compiled model failed") == 1
    assert "img/s=" in captured.err and "mem=" in captured.err and "GiB" in captured.err
    events = EventAccumulator(str(Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID),
                              size_guidance={"scalars": 0})
    events.Reload()
    assert {"loss/train", "lr/backbone", "speed/images_per_s",
            "memory/peak_gib"} <= set(events.Tags()["scalars"])
    speeds = events.Scalars("speed/images_per_s")
    assert [e.step for e in speeds] == [1, 2] and all(0 < e.value < 1e4 for e in speeds)
    assert all(0.01 < e.value < 64 for e in events.Scalars("memory/peak_gib"))
    assert "amp/loss_scale" not in events.Tags()["scalars"]


# --- CUDA (skipped on the CPU by the conftest hook) ----------------------------------------------

@pytest.mark.cuda
def test_cuda_precision_settings():
    cuda = torch.device("cuda")
    fp16 = precision_for("fp16", cuda, log=lambda *_: None)
    assert fp16.scaler.is_enabled() and fp16.scaler.get_scale() == 2.0**16
    with fp16.autocast():
        assert torch.get_autocast_dtype("cuda") == torch.float16 and torch.is_autocast_enabled("cuda")
    bf16 = precision_for("bf16", cuda, log=lambda *_: None)
    assert not bf16.scaler.is_enabled()
    with bf16.autocast():
        assert torch.get_autocast_dtype("cuda") == torch.bfloat16
