"""The backbone seam (libs/models/backbone.py): a second backbone, registered by this test
alone, is chosen in the config and then built, trained, evaluated and exported by the
unchanged scripts, with the learning-rate groups the model declares."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from click.testing import CliRunner
from tests.tiny_model import narrow

import eval as eval_script
import export as export_script
import train
from libs.models import build_model
from libs.models.backbone import BACKBONES, register_backbone
from libs.training.optim import build_optimizer
from libs.utils.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]

NAME = "tiny_plain_cnn"


class TinyPlainCNN(nn.Module):
    """A plain four-stage CNN, nothing like ResNet: 3x3 stride-2 convolutions (the geometry
    rule's ``(n - 1) // 2 + 1`` cells) down to stride 8 or 16, trainable BatchNorm."""

    def __init__(self, n_blocks, base_width, norm, output_stride, multi_grid):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output stride {output_stride} (8 or 16)")
        widths = [base_width, base_width, 2 * base_width, 4 * base_width]
        strides = [2, 2, 2, 2 if output_stride == 16 else 1]

        def stage(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.low = nn.Sequential(stage(3, widths[0], strides[0]),
                                 stage(widths[0], widths[1], strides[1]))
        self.high = nn.Sequential(stage(widths[1], widths[2], strides[2]),
                                  stage(widths[2], widths[3], strides[3]))
        self.out_channels, self.output_stride = widths[3], output_stride
        self.low_channels, self.low_stride = widths[1], 4

    def forward_features(self, x):
        low = self.low(x)
        return low, self.high(low)

    def forward(self, x):
        return self.forward_features(x)[1]


@pytest.fixture
def plain_backbone():
    register_backbone(NAME)(TinyPlainCNN)
    yield
    del BACKBONES[NAME]


def plain_cfg(toy_cfg):
    cfg = narrow(toy_cfg, ITER_MAX=4, ITER_SNAP=2, ITER_TB=2)
    cfg.MODEL.BACKBONE.NAME = NAME
    cfg.SOLVER.BATCH_SIZE.TRAIN = 2
    return cfg


@pytest.mark.parametrize("config, stride", [("toy.yaml", 8), ("toy_deeplabv3.yaml", 16),
                                            ("toy_deeplabv3plus.yaml", 4)])
def test_every_head_takes_the_registered_backbone(plain_backbone, config, stride):
    cfg = load_config(REPO_ROOT / "config" / config, overrides=[f"MODEL.BACKBONE.NAME={NAME}"])
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).eval()
    assert isinstance(model.base.backbone, TinyPlainCNN)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 65, 81))
    size = [65, 81]
    for _ in range(stride.bit_length() - 1):  # one stride-2 step per halving
        size = [(n - 1) // 2 + 1 for n in size]
    assert logits.shape == (1, cfg.DATASET.N_CLASSES, *size)


def test_a_second_backbone_trains_evaluates_and_exports_through_the_scripts(
        toy_cfg, plain_backbone, tmp_path, one_torch_thread):
    cfg = plain_cfg(toy_cfg)
    config_path = tmp_path / "plain.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))

    # The learning-rate groups come from what the model declares as its backbone.
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    groups = {g["name"]: g for g in build_optimizer(model, cfg.SOLVER).param_groups}
    backbone_ids = {id(p) for p in model.base.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone_ids
    assert groups["backbone"]["lr"] == cfg.SOLVER.LR  # the trainable BatchNorms included
    head = groups["head_weights"]["params"] + groups["head_biases"]["params"]
    assert head and not backbone_ids & {id(p) for p in head}
    assert groups["head_weights"]["lr"] == pytest.approx(10 * cfg.SOLVER.LR)
    assert groups["head_biases"]["lr"] == pytest.approx(20 * cfg.SOLVER.LR)

    result = CliRunner().invoke(train.main, ["-c", str(config_path), "--no-cuda", "--no-eval"])
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "models" / cfg.EXP.ID / "checkpoint_final.pth"
    state = torch.load(checkpoint, weights_only=True)
    trained = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    trained.load_state_dict(state["model"])
    moved = {name: not torch.equal(param, dict(model.named_parameters())[name])
             for name, param in trained.named_parameters()}
    assert all(moved[n] for n in moved if n.startswith("base.backbone.") and "weight" in n)
    saved_groups = state["optimizer"]["param_groups"]
    assert [g["name"] for g in saved_groups] == ["backbone", "head_weights", "head_biases"]
    assert len(saved_groups[0]["params"]) == len(backbone_ids)

    scores = tmp_path / "scores.json"
    result = CliRunner().invoke(eval_script.main, ["-c", str(config_path), "-m", str(checkpoint),
                                                   "--no-cuda", "-o", str(scores)])
    assert result.exit_code == 0, result.output
    results = json.loads(scores.read_text())
    assert results["n_images"] == 4 and 0.0 <= results["mean_iou"] <= 1.0

    onnx_path = tmp_path / "plain.onnx"
    result = CliRunner().invoke(export_script.main, ["-c", str(config_path), "-m",
                                                     str(checkpoint), "-o", str(onnx_path)])
    assert result.exit_code == 0, result.output
    assert onnx_path.stat().st_size > 0 and "max relative error" in result.output
