"""Every script runs DeepLab v3 and v3+ through the registry, from their toy configs.

train.py trains two iterations and scores the test split; the others take a
random-init checkpoint of a narrow model (as tests/tiny_model.py does for v2).
"""

import json
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from addict import Dict
from click.testing import CliRunner

import demo
import draw_model
import eval as eval_script
import export as export_script
import train
import uvcdemo
from libs.inference.onnx_model import OnnxModel
from libs.models import build_model
from libs.utils.atomic import save_torch
from libs.utils.config import load_config

REPO = Path(__file__).resolve().parents[2]
KINDS = {"v3": "toy_deeplabv3.yaml", "v3plus": "toy_deeplabv3plus.yaml"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(script, *args):
    return CliRunner().invoke(script.main, [str(a) for a in args])


@pytest.fixture(params=sorted(KINDS))
def setup(request, toy_cfg, tmp_path):
    """(kind, config path, random-init checkpoint, cfg) of a narrow v3 or v3+ on the toy data."""
    config_name = KINDS[request.param]
    toy_cfg.MODEL = Dict(load_config(REPO / "config" / config_name).MODEL.to_dict())
    toy_cfg.MODEL.BACKBONE.update(N_BLOCKS=[1, 1, 1, 1], BASE_WIDTH=8)
    toy_cfg.MODEL.update(HEAD_CHANNELS=16, INIT_MODEL=None)
    if "DECODER_CHANNELS" in toy_cfg.MODEL:
        toy_cfg.MODEL.DECODER_CHANNELS = 8
    toy_cfg.SOLVER.update(ITER_MAX=2, ITER_SNAP=2, ITER_TB=2)
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(yaml.safe_dump(toy_cfg.to_dict()))
    torch.manual_seed(0)
    model = build_model(toy_cfg.MODEL, toy_cfg.DATASET.N_CLASSES)
    checkpoint = tmp_path / "tiny.pth"
    save_torch({"model": model.state_dict(), "iteration": 0}, checkpoint)
    return request.param, config_path, checkpoint, toy_cfg


def first_test_image(cfg):
    return sorted((Path(cfg.DATASET.ROOT) / "images").rglob("*.jpg"))[0]


def test_train_and_eval(setup, tmp_path):
    kind, config_path, checkpoint, cfg = setup
    result = run(train, "--config", config_path, "--no-cuda")
    assert result.exit_code == 0, result.output
    assert f"{cfg.MODEL.NAME}, " in result.output
    final = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID / "checkpoint_final.pth"
    state = torch.load(final, weights_only=True)["model"]
    assert state["base.classifier.weight"].shape[0] == cfg.DATASET.N_CLASSES
    assert ("base.decoder.fuse2.conv.weight" in state) == (kind == "v3plus")
    output = tmp_path / "scores.json"
    result = run(eval_script, "-c", config_path, "-m", final, "-o", output)
    assert result.exit_code == 0, result.output
    scores = json.loads(output.read_text())
    assert 0.0 <= scores["mean_iou"] <= 1.0 and scores["n_images"] == 4


def test_demo_export_and_onnx_demo(setup, tmp_path):
    kind, config_path, checkpoint, cfg = setup
    image = first_test_image(cfg)
    figure = tmp_path / "figure.png"
    result = run(demo, "-c", config_path, "-m", checkpoint, "-i", image, "-o", figure,
                 "--no-show")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(figure)) is not None
    onnx_path = tmp_path / "tiny.onnx"
    result = run(export_script, "-c", config_path, "-m", checkpoint, "--check-sizes", "49x65,41x57",
                 "-o", onnx_path)
    assert result.exit_code == 0, result.output
    assert "ONNX Runtime vs PyTorch at 41x57" in result.output
    assert OnnxModel(onnx_path, "cpu").n_classes == cfg.DATASET.N_CLASSES
    result = run(demo, "-c", config_path, "--onnx", onnx_path, "-i", image,
                 "-o", tmp_path / "onnx.png", "--no-show")
    assert result.exit_code == 0, result.output


def test_uvcdemo_and_draw_model(setup, tmp_path):
    kind, config_path, checkpoint, cfg = setup
    first = cv2.imread(str(first_test_image(cfg)))
    video = tmp_path / "input.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (first.shape[1], first.shape[0]))
    for _ in range(2):
        writer.write(first)
    writer.release()
    output = tmp_path / "out.avi"
    result = run(uvcdemo, "-c", config_path, "-m", checkpoint, "--video", video, "-o", output,
                 "--no-show")
    assert result.exit_code == 0, result.output
    assert "2 frames shown" in result.output and output.is_file()
    result = run(draw_model, "-c", config_path, "--size", 33)
    assert result.exit_code == 0, result.output
    side = 9 if kind == "v3plus" else 3  # logits of a 33 input at stride 4 or 16
    assert f"model output (fused logits): 1x8x{side}x{side}" in result.output
    assert "base.classifier " in result.output and "in frozen BatchNorm" in result.output
