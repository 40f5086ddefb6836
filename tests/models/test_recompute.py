"""Activation checkpointing of the backbone (libs/models/recompute.py): the same gradients,
the same state dict, the plain path in eval mode, frozen BatchNorm and the RNG state."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.utils.checkpoint

from libs.models import DeepLabV2_ResNet101_MSC
from libs.models.recompute import CheckpointedBackbone, backbones, enable_activation_checkpointing, stage_segments
from libs.utils.errors import ConfigError, DeepLabError
from libs.models.resnet import ResNetBackbone
from libs.training.loss import msc_loss_terms

N_CLASSES = 5
N_BLOCKS = (2, 2, 3, 2)  # res4 of three blocks: "sqrt" and 2-block segments differ from "block"
SIZE = 33  # 8k+1: 5x5 full-scale cells; MSC copies of 17 and 25 pixels
SCALES_RUN = 3  # the backbone runs once per MSC scale (1, 0.5, 0.75)
# Checkpointed segments per backbone run: the stem plus, per stage of (2, 2, 3, 2) blocks,
SEGMENTS = {"block": 1 + 9, "stage": 1 + 4, "sqrt": 1 + 2 + 2 + 2 + 2, 2: 1 + 1 + 1 + 2 + 1}


def segments(backbone, granularity):
    """The backbone's modules in forward order, grouped into segments (tuples of modules)."""
    return [segment for _, segment in stage_segments(backbone, granularity)]


def activation_checkpointing(model):
    """The granularity of ``model``'s checkpointed backbone, or ``None`` where it is off."""
    return getattr(backbones(model)[0], "checkpoint_granularity", None)


def disable_activation_checkpointing(model):
    """Undo :func:`enable_activation_checkpointing` (a no-op where it is off); returns ``model``."""
    for backbone in backbones(model):
        if isinstance(backbone, CheckpointedBackbone):
            backbone.__class__ = ResNetBackbone
            del backbone.checkpoint_granularity
            del backbone.checkpoint_preserve_rng
    return model


def tiny_model(geometry="caffe", seed=0):
    torch.manual_seed(seed)
    return DeepLabV2_ResNet101_MSC(N_CLASSES, n_blocks=N_BLOCKS, base_width=8,
                                   msc_geometry=geometry).train()


def batch(seed=1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, N_CLASSES, (2, SIZE, SIZE), generator=generator)
    labels[0, :10] = 255
    return images, labels


def gradients(model, images, labels):
    """Every parameter's gradient of the Caffe loss of one batch (named)."""
    model.zero_grad(set_to_none=True)
    outputs = model(images)
    terms = msc_loss_terms(outputs, labels, 255, model.scales, model.geometry)
    (terms.sum() / len(images)).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(actual, expected):
    assert actual.keys() == expected.keys()
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name  # a real gradient, not an unused parameter
        torch.testing.assert_close(actual[name], grad, rtol=1e-5,
                                   atol=1e-5 * grad.abs().max().item(), msg=name)


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """The number of torch.utils.checkpoint.checkpoint calls so far (a one-element list)."""
    calls = [0]
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls[0] += 1
        assert kwargs["use_reentrant"] is False
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls


@pytest.mark.parametrize("geometry, granularity", [
    ("caffe", "sqrt"), ("pytorch", "sqrt"), ("caffe", "block"), ("caffe", "stage"), ("caffe", 2)])
def test_gradients_equal_the_plain_run(geometry, granularity, checkpoint_calls, one_torch_thread):
    model = tiny_model(geometry)
    images, labels = batch()
    plain = gradients(model, images, labels)
    assert checkpoint_calls[0] == 0
    assert enable_activation_checkpointing(model, granularity=granularity) is model
    checkpointed = gradients(model, images, labels)
    assert checkpoint_calls[0] == SEGMENTS[granularity] * SCALES_RUN
    assert_same_gradients(checkpointed, plain)


@pytest.mark.parametrize("granularity, sizes", [
    ("sqrt", [2, 1, 2, 2, 5, 5, 5, 5, 3, 2, 1]),
    ("block", [1] * 33),
    ("stage", [3, 4, 23, 3]),
    (4, [3, 4, 4, 4, 4, 4, 4, 3, 3]),
])
def test_segments_of_resnet101(granularity, sizes):
    backbone = ResNetBackbone((3, 4, 23, 3), base_width=4)
    plan = segments(backbone, granularity)
    assert plan[0] == (backbone.conv1, backbone.pool1)  # the stem
    assert [len(segment) for segment in plan[1:]] == sizes
    blocks = [block for name in ("res2", "res3", "res4", "res5")
              for block in getattr(backbone, name).children()]
    assert [m for segment in plan[1:] for m in segment] == blocks  # each once, in order


def test_the_default_is_sqrt_and_takes_no_other_argument(checkpoint_calls, one_torch_thread):
    model = enable_activation_checkpointing(tiny_model())  # as the training loop calls it
    assert activation_checkpointing(model) == "sqrt"
    gradients(model, *batch())
    assert checkpoint_calls[0] == SEGMENTS["sqrt"] * SCALES_RUN


def test_state_dict_keys_and_values_are_unchanged():
    plain = tiny_model()
    model = enable_activation_checkpointing(tiny_model())
    expected, state = plain.state_dict(), model.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    # checkpoints load both ways, strictly
    other = tiny_model(seed=5)
    enable_activation_checkpointing(other).load_state_dict(expected, strict=True)
    plain.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("mode", ["eval", "train_no_grad", "inference_mode"])
def test_inference_runs_the_plain_path(mode, checkpoint_calls, one_torch_thread):
    images, _ = batch()
    plain, model = tiny_model(), enable_activation_checkpointing(tiny_model())
    context = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    if mode != "train_no_grad":
        plain.eval()
        model.eval()
    with context():
        expected, actual = plain(images), model(images)
    if mode == "train_no_grad":  # the training-mode list of MSC outputs
        assert len(actual) == len(expected) == 4
        assert all(torch.equal(a, e) for a, e in zip(actual, expected))
    else:
        assert torch.equal(actual, expected)
    assert checkpoint_calls[0] == 0


def test_eval_with_gradients_also_runs_the_plain_path(checkpoint_calls, one_torch_thread):
    model = enable_activation_checkpointing(tiny_model()).eval()
    model(batch()[0]).sum().backward()
    assert checkpoint_calls[0] == 0


def test_frozen_batchnorm_stays_frozen_after_a_step(one_torch_thread):
    model = enable_activation_checkpointing(tiny_model())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    frozen = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    weights = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    assert buffers and frozen  # running statistics; BatchNorm affine parameters
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=0.1, momentum=0.9)
    for _ in range(2):
        gradients(model, *batch())
        optimizer.step()
    state = dict(model.named_parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert all(torch.equal(state[k], v) and state[k].grad is None for k, v in frozen.items())
    assert all(not torch.equal(state[k], v) for k, v in weights.items())  # the step did happen


def test_disable_restores_the_plain_backbone(checkpoint_calls, one_torch_thread):
    model = enable_activation_checkpointing(tiny_model(), granularity="stage")
    assert type(model.base.backbone) is CheckpointedBackbone
    assert disable_activation_checkpointing(model) is model
    assert type(model.base.backbone) is ResNetBackbone
    assert activation_checkpointing(model) is None
    assert not hasattr(model.base.backbone, "checkpoint_granularity")
    gradients(model, *batch())
    assert checkpoint_calls[0] == 0
    disable_activation_checkpointing(model)  # a no-op when off


def test_the_bare_network_and_a_copy_can_be_checkpointed(checkpoint_calls, one_torch_thread):
    model = tiny_model()
    assert enable_activation_checkpointing(model.base, granularity="sqrt") is model.base
    assert activation_checkpointing(model) == "sqrt"
    twin = copy.deepcopy(model)
    assert type(twin.base.backbone) is CheckpointedBackbone
    assert_same_gradients(gradients(twin, *batch()), gradients(model, *batch()))
    assert checkpoint_calls[0] == 2 * SEGMENTS["sqrt"] * SCALES_RUN


def with_dropout(model):
    """``model`` with a dropout after res4's first block (the backbone has none of its own)."""
    res4 = model.base.backbone.res4
    res4.a = nn.Sequential(res4.a, nn.Dropout(0.5))
    return model


def seeded_gradients(model, seed=3):
    torch.manual_seed(seed)
    return gradients(model, *batch())


def test_rng_state_is_restored_where_the_backbone_draws_random_numbers(one_torch_thread):
    model = tiny_model()
    assert enable_activation_checkpointing(model).base.backbone.checkpoint_preserve_rng is False
    model = with_dropout(disable_activation_checkpointing(model))
    plain = seeded_gradients(model)
    enable_activation_checkpointing(model)  # the default: on, since there is a dropout
    assert model.base.backbone.checkpoint_preserve_rng is True
    assert_same_gradients(seeded_gradients(model), plain)
    # without restoring it, the recomputation draws another dropout mask
    enable_activation_checkpointing(model, preserve_rng_state=False)
    unrestored = seeded_gradients(model)
    weight = "base.backbone.res4.a.0.branch2a.conv.weight"
    assert not torch.allclose(unrestored[weight], plain[weight], rtol=1e-3)


@pytest.mark.parametrize("granularity", ["blocks", 0, -1, True, 1.5, None])
def test_an_unknown_granularity_is_one_line(granularity):
    with pytest.raises(ConfigError, match="unknown granularity") as error:
        enable_activation_checkpointing(tiny_model(), granularity=granularity)
    assert isinstance(error.value, DeepLabError) and "\n" not in str(error.value)


def test_a_model_without_a_resnet_backbone_is_refused():
    with pytest.raises(ConfigError, match="Conv2d contains no ResNetBackbone"):
        enable_activation_checkpointing(nn.Conv2d(3, 3, 1))
