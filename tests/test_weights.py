"""Atomic writes and safe weight loading: failures leave nothing behind and say what is wrong."""

import pytest
import torch

from libs.models import DeepLabV2_ResNet101_MSC
from libs.models.weights import CheckpointError, load_model_weights, load_weights
from libs.utils.atomic import atomic_path, save_torch


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_checkpoint_round_trip_and_plain_state_dicts(tmp_path):
    model = DeepLabV2_ResNet101_MSC(3, n_blocks=(1, 1, 1, 1), base_width=8)
    save_torch({"model": model.state_dict(), "iteration": 7}, tmp_path / "ckpt.pth")
    save_torch(model.state_dict(), tmp_path / "plain.pth")
    for name in ("ckpt.pth", "plain.pth"):
        loaded = load_weights(tmp_path / name)
        assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
        other = DeepLabV2_ResNet101_MSC(3, n_blocks=(1, 1, 1, 1), base_width=8)
        load_model_weights(other, tmp_path / name, 3)


def test_weight_file_errors_name_the_file(tmp_path):
    model = DeepLabV2_ResNet101_MSC(3, n_blocks=(1, 1, 1, 1), base_width=8)
    with pytest.raises(CheckpointError, match=r"missing.pth: weight file not found$"):
        load_weights(tmp_path / "missing.pth")
    path = tmp_path / "cut.pth"
    save_torch(model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable PyTorch weight file"):
        load_weights(path)
    save_torch({"model": model.state_dict()}, tmp_path / "three.pth")
    five = DeepLabV2_ResNet101_MSC(5, n_blocks=(1, 1, 1, 1), base_width=8)
    with pytest.raises(CheckpointError, match="three.pth: weights are for 3 classes but the "
                                              "config asks for 5"):
        load_model_weights(five, tmp_path / "three.pth", 5)
    wider = DeepLabV2_ResNet101_MSC(3, n_blocks=(1, 1, 1, 1), base_width=16)
    with pytest.raises(CheckpointError, match="does not match the model: .*wrong shape"):
        load_model_weights(wider, tmp_path / "three.pth", 3)
    save_torch({"model": "nonsense"}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="odd.pth: holds no model state dict"):
        load_weights(tmp_path / "odd.pth")
