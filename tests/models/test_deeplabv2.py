"""The DeepLab v2 model: sizes, parameter counts, MSC, frozen BatchNorm, ASPP init, export."""

import pytest
import torch
import torch.nn.functional as F
from addict import Dict

from libs.models import DeepLabV2_ResNet101_MSC, build_model
from libs.utils.errors import ConfigError
from libs.models.deeplabv2 import ASPP
from libs.models.resnet import FrozenBatchNorm2d, block_names
from libs.utils.config import load_config

TINY = (1, 1, 1, 1)


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return DeepLabV2_ResNet101_MSC(182).eval()


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_full_model_parameter_counts(full_model):
    assert n_params(full_model) == 55_919_384
    assert n_params(full_model.base.backbone) == 42_500_160
    assert n_params(full_model.base.aspp) == 13_419_224


def test_full_model_321_gives_41(full_model):
    with torch.no_grad():
        out = full_model.base(torch.zeros(1, 3, 321, 321))
    assert out.shape == (1, 182, 41, 41)


def test_full_model_built_from_the_config():
    cfg = load_config("config/cocostuff.yaml")
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    assert n_params(model) == 55_919_384
    assert model.scales == [0.5, 0.75]
    assert [m.dilation[0] for m in model.base.aspp.values()] == [6, 12, 18, 24]
    assert [len(getattr(model.base.backbone, f"res{i}")) for i in (2, 3, 4, 5)] == [3, 4, 23, 3]


def test_caffe_block_names():
    assert block_names(3) == ["a", "b", "c"]
    assert block_names(4) == ["a", "b1", "b2", "b3"]
    assert block_names(23)[-1] == "b22"
    model = DeepLabV2_ResNet101_MSC(21)
    keys = set(model.state_dict())
    for key in [
        "base.backbone.conv1.conv.weight",
        "base.backbone.conv1.bn.running_var",
        "base.backbone.res2.a.branch1.conv.weight",
        "base.backbone.res3.b1.branch2a.conv.weight",
        "base.backbone.res4.b22.branch2c.bn.weight",
        "base.backbone.res5.c.branch2c.conv.weight",
        "base.aspp.c3.bias",
    ]:
        assert key in keys
    assert not any("bias" in k for k in keys if ".conv." in k)  # backbone convs have no bias


@pytest.mark.parametrize(
    "size, expected", [((321, 321), (41, 41)), ((513, 513), (65, 65)), ((101, 67), (13, 9))]
)
def test_output_sizes(size, expected):
    model = DeepLabV2_ResNet101_MSC(5, n_blocks=TINY).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, *size))
    assert out.shape == (2, 5, *expected)


def test_stride_and_dilation_layout():
    backbone = DeepLabV2_ResNet101_MSC(5, n_blocks=(3, 4, 23, 3)).base.backbone
    assert backbone.conv1.conv.stride == (2, 2) and backbone.conv1.conv.bias is None
    pool = backbone.pool1
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, True)
    first = backbone.res3.a
    assert first.branch2a.conv.stride == (2, 2) and first.branch1.conv.stride == (2, 2)
    assert first.branch2b.conv.stride == (1, 1)
    assert backbone.res3.b1.branch1 is None
    for stage, dilation in (("res4", 2), ("res5", 4)):
        for block in getattr(backbone, stage):
            assert block.branch2b.conv.dilation == (dilation, dilation)
            assert block.branch2b.conv.padding == (dilation, dilation)
            assert block.branch2a.conv.stride == (1, 1)
    assert all(bn.eps == 1e-5 for bn in backbone.modules() if isinstance(bn, FrozenBatchNorm2d))


def _msc_reference(model, x, sizes, resize_input, align_corners):
    """MSC built by hand from ``model.base``: each extra scale at ``sizes``, fused by max."""
    full = model.base(x)
    pyramid = [model.base(resize_input(x, size)) for size in sizes]
    up = [F.interpolate(t, size=full.shape[-2:], mode="bilinear", align_corners=align_corners)
          for t in pyramid]
    fused = full
    for t in up:
        fused = torch.maximum(fused, t)
    return [full] + pyramid + [fused]


@pytest.mark.parametrize("size, caffe_sizes", [
    ((321, 321), [(161, 161), (241, 241)]),  # Caffe's sizes for the training crop
    ((97, 129), [(49, 65), (73, 97)]),
    ((101, 67), [(51, 34), (76, 51)]),  # round(100 * 0.5) + 1, ..., round(66 * 0.75) + 1
])
def test_msc_caffe_geometry_matches_a_corner_aligned_reference(size, caffe_sizes):
    torch.manual_seed(0)
    model = DeepLabV2_ResNet101_MSC(4, n_blocks=TINY, base_width=8).train()
    assert model.geometry == "caffe"
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        got = model(x)
        want = _msc_reference(
            model, x, caffe_sizes,
            lambda t, s: F.interpolate(t, size=s, mode="bilinear", align_corners=True), True)
    assert len(got) == 4
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.equal(a, b)
    assert (got[-1] >= got[0]).all() and (got[-1] > got[0]).any()


def test_msc_pytorch_geometry_is_the_original_repositorys():
    """The legacy convention: scale_factor inputs and half-pixel resizes, as the original's MSC."""
    torch.manual_seed(0)
    model = DeepLabV2_ResNet101_MSC(4, n_blocks=TINY, base_width=8, msc_geometry="pytorch").train()
    x = torch.randn(2, 3, 101, 67)
    with torch.no_grad():
        got = model(x)
        scales = iter(model.scales)
        want = _msc_reference(
            model, x, [None, None],
            lambda t, _: F.interpolate(t, scale_factor=next(scales), mode="bilinear",
                                       align_corners=False), False)
    assert got[1].shape[-2:] == model.base(torch.zeros(1, 3, 50, 33)).shape[-2:] == (7, 5)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    caffe = DeepLabV2_ResNet101_MSC(4, n_blocks=TINY, base_width=8).train()
    caffe.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.equal(caffe(x)[-1], got[-1])  # the two conventions really differ


def test_msc_geometry_comes_from_the_config_and_is_checked():
    cfg = load_config("config/toy.yaml")
    assert build_model(cfg.MODEL, 8).geometry == "caffe"
    legacy = cfg.MODEL.to_dict() | {"MSC": {"SCALES": [0.5, 0.75], "GEOMETRY": "pytorch"}}
    assert build_model(Dict(legacy), 8).geometry == "pytorch"
    with pytest.raises(ConfigError, match="MODEL.MSC.GEOMETRY: unknown geometry 'tf'"):
        build_model(Dict(legacy | {"MSC": {"SCALES": [0.5], "GEOMETRY": "tf"}}), 8)


def test_msc_eval_returns_fused_only():
    torch.manual_seed(0)
    model = DeepLabV2_ResNet101_MSC(4, n_blocks=TINY)
    x = torch.randn(1, 3, 57, 83)
    with torch.no_grad():
        train_outputs = model.train()(x)
        fused = model.eval()(x)
    assert torch.is_tensor(fused)
    assert torch.equal(fused, train_outputs[-1])


def test_frozen_batchnorm_survives_an_optimizer_step():
    torch.manual_seed(0)
    model = DeepLabV2_ResNet101_MSC(3, n_blocks=TINY).train()
    for bn in model.modules():
        if isinstance(bn, FrozenBatchNorm2d):  # non-trivial statistics to guard
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        outputs = model(torch.randn(2, 3, 65, 65))
        loss = sum(o.square().mean() for o in outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    bn_keys = [k for k in before if ".bn." in k]
    assert len(bn_keys) == 5 * (1 + 4 * 3 + 4)  # 17 BNs, 5 tensors each
    for k in bn_keys:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["base.aspp.c0.weight"], after["base.aspp.c0.weight"])
    assert not torch.equal(
        before["base.backbone.res2.a.branch2a.conv.weight"],
        after["base.backbone.res2.a.branch2a.conv.weight"],
    )


def test_frozen_batchnorm_uses_running_statistics_in_train_mode():
    bn = FrozenBatchNorm2d(3).train()
    bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = torch.randn(2, 3, 4, 4)
    expected = (x - bn.running_mean.view(1, 3, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, 3, 1, 1) + 1e-5
    )
    assert torch.allclose(bn(x), expected, atol=1e-6)


def test_aspp_initialisation_statistics():
    torch.manual_seed(0)
    aspp = ASPP(2048, 182, [6, 12, 18, 24])
    assert list(aspp.keys()) == ["c0", "c1", "c2", "c3"]
    for rate, conv in zip([6, 12, 18, 24], aspp.values()):
        assert conv.dilation == (rate, rate) and conv.padding == (rate, rate)
        w = conv.weight.detach()
        assert w.shape == (182, 2048, 3, 3)
        assert abs(w.mean().item()) < 1e-4
        assert abs(w.std().item() - 0.01) < 1e-4
        assert torch.count_nonzero(conv.bias) == 0


def test_aspp_sums_its_branches():
    torch.manual_seed(0)
    aspp = ASPP(8, 3, [1, 2])
    x = torch.randn(1, 8, 9, 9)
    assert torch.allclose(aspp(x), aspp["c0"](x) + aspp["c1"](x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_single_scale_network_scripts_and_msc_exports():
    torch.manual_seed(0)
    model = DeepLabV2_ResNet101_MSC(4, n_blocks=TINY).eval()
    x = torch.randn(1, 3, 65, 81)
    with torch.no_grad():
        scripted = torch.jit.script(model.base)
        assert torch.equal(scripted(x), model.base(x))
        exported = torch.export.export(model, (x,))
        assert torch.allclose(exported.module()(x), model(x), atol=1e-6)


def test_bad_block_counts_rejected():
    with pytest.raises(ValueError, match="n_blocks"):
        DeepLabV2_ResNet101_MSC(4, n_blocks=(1, 1, 1))
