"""prepare_for_inference: the same function as the plain model, faster; the original untouched."""

import json

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import eval as eval_script
from libs.models.prepared import InferenceModel, fold_batchnorm, prepare_for_inference
from libs.utils import device as device_utils
from libs.utils.errors import ConfigError
from libs.utils.device import require_precision
from tests.tiny_model import randomised_model, tiny_setup


def relative_error(out, ref):
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("geometry", ["caffe", "pytorch"])
@pytest.mark.parametrize("size", [(37, 50), (41, 41), (58, 29)])
def test_prepared_msc_and_single_scale_equal_the_plain_model(one_torch_thread, geometry, size):
    model = randomised_model(geometry)
    x = torch.randn(2, 3, *size)
    msc = prepare_for_inference(model)
    single = prepare_for_inference(model.base)
    with torch.inference_mode():
        ref_msc, ref_single = model(x), model.base(x)
        out_msc, out_single = msc(x), single(x)
    assert out_msc.shape == ref_msc.shape and out_single.shape == ref_single.shape
    assert out_msc.dtype == torch.float32
    assert relative_error(out_msc, ref_msc) < 1e-5
    assert relative_error(out_single, ref_single) < 1e-5
    assert msc.geometry == geometry and msc.n_classes == 5


def test_batchnorm_is_gone_and_weights_are_channels_last():
    prepared = prepare_for_inference(randomised_model())
    assert isinstance(prepared, InferenceModel)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    conv1 = prepared.net.base.backbone.conv1.conv
    assert conv1.bias is not None
    assert conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in prepared.parameters())


def test_original_model_is_untouched_and_still_trains(one_torch_thread):
    model = randomised_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_for_inference(model)
    assert model.training  # mode not changed
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 1 + 4 * 4  # stem, 4 x (3 + shortcut)
    outputs = model(torch.randn(1, 3, 33, 33))
    sum(o.sum() for o in outputs).backward()
    assert model.base.aspp.c0.weight.grad is not None


def test_fold_in_a_sequential_and_counts():
    torch.manual_seed(1)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 2, 1, bias=False), nn.BatchNorm2d(2))
    for bn in (seq[1], seq[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
    seq.eval()
    x = torch.randn(1, 3, 9, 7)
    ref = seq(x)
    assert fold_batchnorm(seq) == 2
    assert isinstance(seq[1], nn.Identity) and isinstance(seq[4], nn.Identity)
    assert relative_error(seq(x), ref) < 1e-6


def test_unknown_precision_and_unsupported_devices(monkeypatch):
    model = randomised_model()
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_for_inference(model, "int8")
    with pytest.raises(ConfigError, match="fp16: float16 inference needs CUDA"):
        prepare_for_inference(model, "fp16")
    monkeypatch.setattr(device_utils, "cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(ConfigError, match="bf16: the CPU has neither AMX nor AVX512-BF16"):
        require_precision("bf16", "cpu")


def test_bf16_runs_where_the_cpu_is_said_to_support_it(monkeypatch, one_torch_thread):
    monkeypatch.setattr(device_utils, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert device_utils.cpu_native_bf16() == (True, "the CPU has amx_bf16")
    model = randomised_model()
    prepared = prepare_for_inference(model, "bf16")
    assert prepared.net.base.aspp.c0.weight.dtype == torch.bfloat16
    x = torch.randn(1, 3, 33, 41)
    with torch.inference_mode():
        out, ref = prepared(x), model(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert relative_error(out, ref) < 0.1  # bf16 keeps about 3 significant digits


def test_eval_precision_option(toy_cfg, tmp_path, monkeypatch):
    config, ckpt = tiny_setup(toy_cfg, tmp_path)
    runner = CliRunner()
    base = ["--config", str(config), "--model-path", str(ckpt), "--limit", "2", "--no-cuda"]
    plain = runner.invoke(eval_script.main, base + ["--output", str(tmp_path / "a.json")])
    fp32 = runner.invoke(eval_script.main, base + ["--precision", "fp32",
                                                   "--output", str(tmp_path / "b.json")])
    assert plain.exit_code == 0 and fp32.exit_code == 0, fp32.output
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert b["precision"] == "fp32" and a["mean_iou"] == pytest.approx(b["mean_iou"])
    fp16 = runner.invoke(eval_script.main, base + ["--precision", "fp16"])
    assert fp16.exit_code == 1
    assert fp16.output.strip().splitlines()[-1] == (
        "Error: --precision fp16: float16 inference needs CUDA; use fp32 on the CPU")
