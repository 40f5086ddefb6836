"""Atomic writes and safe weight loading: failures leave nothing behind and say what is wrong.

Also: the released deeplab-pytorch checkpoints load into our model and compute what theirs did.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from libs.inference.predict import load_model
from libs.models import DeepLabV2_ResNet101_MSC
from libs.models.released import our_key, stage_depths
from libs.models.weights import load_model_weights, read_weights
from libs.utils.errors import CheckpointError
from libs.training.checkpoint import load_initial_weights
from libs.utils.atomic import atomic_path, save_torch


def load_weights(path):
    """The model state dict (our key layout) stored in ``path`` or named by it."""
    return read_weights(path).state_dict


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


# --- deeplab-pytorch's released checkpoints -------------------------------------------------
# An independent description of kazuto1011/deeplab-pytorch's MSC(DeepLabV2), written from its
# public libs/models/resnet.py, deeplabv2.py and msc.py: module names, strides, dilations and
# the MSC resize as that repository has them, nothing taken from libs.models.

class RefConvBnReLU(nn.Sequential):
    def __init__(self, in_ch, out_ch, kernel, stride, padding, dilation, relu=True):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation,
                                          bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch, eps=1e-5))
        if relu:
            self.add_module("relu", nn.ReLU())


class RefBottleneck(nn.Module):
    def __init__(self, in_ch, out_ch, stride, dilation, downsample):
        super().__init__()
        mid = out_ch // 4
        self.reduce = RefConvBnReLU(in_ch, mid, 1, stride, 0, 1)
        self.conv3x3 = RefConvBnReLU(mid, mid, 3, 1, dilation, dilation)
        self.increase = RefConvBnReLU(mid, out_ch, 1, 1, 0, 1, relu=False)
        self.shortcut = (RefConvBnReLU(in_ch, out_ch, 1, stride, 0, 1, relu=False)
                         if downsample else nn.Identity())

    def forward(self, x):
        return F.relu(self.increase(self.conv3x3(self.reduce(x))) + self.shortcut(x))


class RefResLayer(nn.Sequential):
    def __init__(self, n, in_ch, out_ch, stride, dilation):
        super().__init__()
        for i in range(n):
            self.add_module(f"block{i + 1}", RefBottleneck(
                in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, dilation, i == 0))


class RefASPP(nn.Module):
    def __init__(self, in_ch, out_ch, rates):
        super().__init__()
        for i, rate in enumerate(rates):
            self.add_module(f"c{i}", nn.Conv2d(in_ch, out_ch, 3, 1, rate, rate, bias=True))

    def forward(self, x):
        return sum(stage(x) for stage in self.children())


class RefDeepLabV2(nn.Sequential):
    def __init__(self, n_classes, n_blocks, rates, width):
        super().__init__()
        stem = nn.Sequential()
        stem.add_module("conv1", RefConvBnReLU(3, width, 7, 2, 3, 1))
        stem.add_module("pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True))
        self.add_module("layer1", stem)
        self.add_module("layer2", RefResLayer(n_blocks[0], width, 4 * width, 1, 1))
        self.add_module("layer3", RefResLayer(n_blocks[1], 4 * width, 8 * width, 2, 1))
        self.add_module("layer4", RefResLayer(n_blocks[2], 8 * width, 16 * width, 1, 2))
        self.add_module("layer5", RefResLayer(n_blocks[3], 16 * width, 32 * width, 1, 4))
        self.add_module("aspp", RefASPP(32 * width, n_classes, rates))


class RefMSC(nn.Module):
    def __init__(self, base, scales):
        super().__init__()
        self.base = base
        self.scales = scales

    def forward(self, x):
        logits = self.base(x)
        size = logits.shape[-2:]
        fused = logits
        for s in self.scales:
            h = self.base(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            fused = torch.maximum(fused, h)
        return fused


def released_reference(n_classes=3, n_blocks=(3, 4, 2, 1), width=8, seed=0):
    """A random released-layout MSC(DeepLabV2) in eval mode, with non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = RefMSC(RefDeepLabV2(n_classes, n_blocks, (6, 12, 18, 24), width), (0.5, 0.75))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def save_released(model, path, counters=True):
    state = {k: v for k, v in model.state_dict().items()
             if counters or not k.endswith("num_batches_tracked")}
    save_torch(state, path)
    return path


@pytest.mark.parametrize("counters", [True, False], ids=["with-counters", "old-file"])
def test_released_checkpoint_gives_the_reference_logits(tmp_path, counters):
    reference = released_reference()
    path = save_released(reference, tmp_path / "released.pth", counters)
    assert any(k.startswith("base.layer3.block4.conv3x3.bn.") for k in torch.load(path))
    weights = read_weights(path)
    assert weights.kind == "released checkpoint"
    ours = DeepLabV2_ResNet101_MSC(3, n_blocks=(3, 4, 2, 1), base_width=8)
    assert ours.geometry == "caffe"
    lines = []
    load_model_weights(ours, path, 3, log=lines.append)
    assert ours.geometry == "pytorch"
    assert len(lines) == 1 and "released" in lines[0] and "'pytorch'" in lines[0]
    ours.eval()
    x = torch.randn(1, 3, 57, 43)
    with torch.no_grad():
        torch.testing.assert_close(ours.base(x), reference.base(x))
        torch.testing.assert_close(ours(x), reference(x))


def test_released_key_rule():
    keys = [f"base.layer{n}.block{k}.reduce.conv.weight"
            for n, depth in ((2, 3), (3, 4), (4, 2), (5, 1)) for k in range(1, depth + 1)]
    depth = stage_depths(keys)
    assert our_key("base.layer1.conv1.bn.running_mean", depth) == \
        "base.backbone.conv1.bn.running_mean"
    assert our_key("base.layer2.block1.shortcut.conv.weight", depth) == \
        "base.backbone.res2.a.branch1.conv.weight"
    assert our_key("base.layer2.block3.increase.bn.weight", depth) == \
        "base.backbone.res2.c.branch2c.bn.weight"
    assert our_key("base.layer3.block4.conv3x3.bn.running_var", depth) == \
        "base.backbone.res3.b3.branch2b.bn.running_var"
    assert our_key("base.aspp.c3.bias", depth) == "base.aspp.c3.bias"
    assert our_key("base.fc.weight", depth) is None


def test_unknown_formats_are_one_line_errors(tmp_path):
    save_torch({"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}, tmp_path / "tv.pth")
    with pytest.raises(CheckpointError, match=r"tv.pth: not DeepLab v2 weights .*understood: "
                                              r"training checkpoints") as info:
        read_weights(tmp_path / "tv.pth")
    assert "\n" not in str(info.value) and "voc12" in str(info.value)
    state = released_reference(n_blocks=(1, 1, 1, 1)).state_dict()
    state["base.layer5.block1.extra.conv.weight"] = torch.zeros(1)
    save_torch(state, tmp_path / "odd_released.pth")
    with pytest.raises(CheckpointError, match="odd_released.pth: released-format weights with 1 "
                                              "keys outside that format"):
        read_weights(tmp_path / "odd_released.pth")


def test_initial_weights_from_a_released_checkpoint_keep_the_run_geometry(tmp_path):
    path = save_released(released_reference(n_blocks=(1, 1, 1, 1)), tmp_path / "r.pth")
    model = DeepLabV2_ResNet101_MSC(3, n_blocks=(1, 1, 1, 1), base_width=8)
    lines = []
    load_initial_weights(model, path, log=lines.append)
    assert model.geometry == "caffe"
    assert "keeps MODEL.MSC.GEOMETRY='caffe'" in lines[0] and "Loaded all weights" in lines[1]


def test_load_model_takes_released_weights(toy_cfg, tmp_path):
    toy_cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    reference = released_reference(toy_cfg.DATASET.N_CLASSES, toy_cfg.MODEL.BACKBONE.N_BLOCKS, 8)
    reference.base.aspp = RefASPP(32 * 8, toy_cfg.DATASET.N_CLASSES, toy_cfg.MODEL.ATROUS_RATES)
    path = save_released(reference, tmp_path / "released.pth")
    lines = []
    model = load_model(toy_cfg, path, torch.device("cpu"), log=lines.append)
    assert model.geometry == "pytorch" and not model.training and len(lines) == 1


class _Hostile:
    """Unpickling this would create ``marker``: what a malicious weight file could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_hostile_pickle_is_refused_and_never_executed(tmp_path):
    from libs.models.weights import load_file

    marker = tmp_path / "executed"
    path = tmp_path / "hostile.pth"
    torch.save({"model": _Hostile(marker)}, path)
    with pytest.raises(CheckpointError) as error:
        load_file(path)
    message = str(error.value)
    assert message == (f"{path}: not a readable PyTorch weight file (truncated or corrupt?): it "
                       "holds objects other than tensors and plain containers (refused; nothing "
                       "in it was executed)")
    assert "weights_only" not in message and "\n" not in message  # no unsafe advice
    assert not marker.exists()
