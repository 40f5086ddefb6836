"""convert.py: Caffe DeepLab v2 weights -> PyTorch, checked against a NumPy Caffe forward pass.

The caffemodels are written by tests/caffe_reference.py with the real layer
names and Caffe's protobuf encoding; two of them are full-depth ResNet-101
files (~180 MB each, shared by the module).
"""

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import convert
from libs.caffe import CAFFE_PRESETS, check_loads, convert_caffe_layers, preset_paths, read_caffemodel, target_model
from libs.utils.errors import CheckpointError, ConfigError, ConversionError, OutputError
from libs.caffe.names import BATCHNORM, CONV, POOL, SCALE, SKIP, caffe_target
from libs.models import DeepLabV2_ResNet101_MSC
from libs.training.checkpoint import load_initial_weights
from libs.utils.atomic import save_torch
from libs.utils.config import load_config
from tests.caffe_reference import (BlobProto, LayerParameter, NetParameter, array_to_blob,
                                   caffe_forward, deeplab_caffe_layers, write_caffemodel)

TINY = (1, 1, 1, 1)
NARROW = 16  # base width of the tiny nets (the toy config's); ResNet-101 has 64
# 39 rows: conv1 gives 20, where Caffe's ceil-mode pooling (11) differs from floor (10).
IMAGE_HW = (39, 37)
REL_TOL = 1e-4


def single_scale(name):
    return "res075" in name or "res05" in name


def rel_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def image(seed=1):
    return np.random.default_rng(seed).standard_normal((3, *IMAGE_HW)) * 50.0


def by_name(layers, name):
    return next(layer for layer in layers if layer.name == name)


def run_cli(*args):
    result = CliRunner().invoke(convert.main, [str(a) for a in args])
    return result


def tiny_voc(tmp_path, mutate=None, name="tiny.caffemodel", **kwargs):
    """A tiny (one block per stage) VOC12 caffemodel, optionally edited first."""
    layers = deeplab_caffe_layers(n_blocks=TINY, multiscale=False, base_width=NARROW, **kwargs)
    if mutate is not None:
        layers = mutate(layers) or layers
    return write_caffemodel(layers, tmp_path / name), layers


def convert_tiny(path, n_classes=21, classifier="fc1_voc12", backbone_only=False):
    model = DeepLabV2_ResNet101_MSC(n_classes, n_blocks=TINY, base_width=NARROW)
    return convert_caffe_layers(read_caffemodel(path), model, classifier, backbone_only, path)


# -- full-depth files ----------------------------------------------------------

@pytest.fixture(scope="module")
def voc_full(tmp_path_factory):
    layers = deeplab_caffe_layers(seed=3)  # MSC net, some branch copies carry blobs
    path = write_caffemodel(layers, tmp_path_factory.mktemp("voc") / "train2.caffemodel")
    reference = caffe_forward(layers, image(), skip=single_scale)["fc1_voc12"]
    return path, reference


@pytest.fixture(scope="module")
def coco_full(tmp_path_factory):
    layers = deeplab_caffe_layers(head="fc1", n_classes=91, coco_head=True, seed=4)
    path = write_caffemodel(layers, tmp_path_factory.mktemp("coco") / "init.caffemodel")
    reference = caffe_forward(layers, image(), skip=single_scale)["res5c"]
    return path, reference


def test_voc12_full_depth_computes_what_caffe_computes(voc_full, tmp_path):
    path, reference = voc_full
    out = tmp_path / "voc.pth"
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output", out)
    assert result.exit_code == 0, result.output
    state_dict = torch.load(out, weights_only=True)
    model = DeepLabV2_ResNet101_MSC(21).eval()
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        logits = model.base(torch.from_numpy(image()).float()[None])[0].double().numpy()
    assert logits.shape == reference.shape == (21, 6, 5)
    assert rel_error(logits, reference) < REL_TOL
    counters = [k for k in state_dict if k.endswith("num_batches_tracked")]
    assert len(counters) == 104 and all(int(state_dict[k]) == 0 for k in counters)
    # The summary accounts for every layer: mapped, skipped by reason, or checked.
    assert f"onto {len(state_dict) - 104} tensors" in result.output
    assert "shared-weight multi-scale branch" in result.output
    assert "parameter-free ReLU" in result.output and "parameter-free Interp" in result.output
    assert "checked pool1: MAX 3x3 stride 2 pad 1 ceil" in result.output


def test_coco_init_converts_the_backbone_only(coco_full, tmp_path):
    path, reference = coco_full
    out = tmp_path / "coco.pth"
    result = run_cli("--dataset", "coco_init", "--caffemodel", path, "--output", out)
    assert result.exit_code == 0, result.output
    state_dict = torch.load(out, weights_only=True)
    model = DeepLabV2_ResNet101_MSC(182).eval()
    backbone_keys = [k for k in model.state_dict() if k.startswith("base.backbone.")]
    assert list(state_dict) == backbone_keys
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    assert unexpected == [] and missing and all(k.startswith("base.aspp.") for k in missing)
    assert sorted(missing) == sorted(k for k in model.state_dict() if k.startswith("base.aspp"))
    with torch.no_grad():
        features = model.base.backbone(torch.from_numpy(image()).float()[None])[0]
    assert rel_error(features.double().numpy(), reference) < REL_TOL
    assert "ASPP (base.aspp.*) keeps its own" in result.output
    assert "fc1 (91 outputs)" in result.output
    # What train.py does with MODEL.INIT_MODEL: the backbone loads, the ASPP keeps its init.
    fresh = DeepLabV2_ResNet101_MSC(182)
    aspp_init = fresh.base.aspp.c0.weight.detach().clone()
    load_initial_weights(fresh, out, log=lambda *_: None)
    assert torch.equal(fresh.base.aspp.c0.weight, aspp_init)
    assert torch.equal(fresh.base.backbone.res5.c.branch2c.conv.weight,
                       state_dict["base.backbone.res5.c.branch2c.conv.weight"])


def test_voc12_file_against_a_182_class_config_is_one_clear_error(voc_full, tmp_path):
    path, _ = voc_full
    out = tmp_path / "voc.pth"
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output", out,
                     "--config", "config/cocostuff.yaml")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "'fc1_voc12_c0'" in result.stderr
    assert "predicts 21 classes but the model has 182 classes" in result.output
    assert not out.exists()


# -- presets ----------------------------------------------------------------------

def test_presets_keep_the_original_paths_and_outputs():
    coco, voc = CAFFE_PRESETS["coco_init"], CAFFE_PRESETS["voc12"]
    assert coco.caffemodel == "data/models/deeplab_resnet101/coco_init/init.caffemodel"
    assert coco.output.endswith("coco_init/deeplabv2_resnet101_COCO_init.pth")
    assert voc.caffemodel == "data/models/deeplab_resnet101/voc12/train2_iter_20000.caffemodel"
    assert voc.output.endswith("voc12/deeplabv2_resnet101_VOC2012.pth")
    assert (voc.n_classes, voc.backbone_only, coco.backbone_only) == (21, False, True)
    assert CAFFE_PRESETS["init"] is coco
    # Training starts from what `convert.py --dataset coco_init` writes.
    assert load_config("config/cocostuff.yaml").MODEL.INIT_MODEL == coco.output


def test_default_input_path_is_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("--dataset", "voc12")
    assert result.exit_code == 1
    assert (
        "data/models/deeplab_resnet101/voc12/train2_iter_20000.caffemodel: caffemodel not found"
        in result.output
    )


def test_help_lists_the_presets():
    result = run_cli("--help")
    assert result.exit_code == 0
    assert "coco_init" in result.output and "voc12" in result.output


def test_dash_h_is_help():
    result = run_cli("-h")
    assert result.exit_code == 0
    assert "--dataset" in result.output and "--config" in result.output


def test_unknown_model_name_in_the_config_is_one_line(tmp_path):
    path, _ = tiny_voc(tmp_path, n_classes=8)
    config = tmp_path / "bad.yaml"
    config.write_text(f"_BASE_: {Path('config/toy.yaml').resolve()}\nMODEL:\n  NAME: NoSuchNet\n")
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output",
                     tmp_path / "x.pth", "--config", config)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: {config}: unknown MODEL.NAME 'NoSuchNet'")


def test_output_over_the_input_is_refused(tmp_path):
    path, _ = tiny_voc(tmp_path)
    raw = path.read_bytes()
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output", path)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {path}: output would overwrite the input caffemodel\n"
    assert path.read_bytes() == raw


def test_unwritable_output_is_one_line(tmp_path):
    path, _ = tiny_voc(tmp_path, n_classes=8)
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "toy.pth"
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output", out,
                     "--config", "config/toy.yaml")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: {out}: cannot write (")


# -- mapping rules ------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, layer_type, kind, module",
    [
        ("conv1", "Convolution", CONV, "base.backbone.conv1.conv"),
        ("bn_conv1", "BatchNorm", BATCHNORM, "base.backbone.conv1.bn"),
        ("scale_conv1", "Scale", SCALE, "base.backbone.conv1.bn"),
        ("res4b22_branch2c", "Convolution", CONV, "base.backbone.res4.b22.branch2c.conv"),
        ("bn4b22_branch2c", "BatchNorm", BATCHNORM, "base.backbone.res4.b22.branch2c.bn"),
        ("scale4b22_branch2c", "Scale", SCALE, "base.backbone.res4.b22.branch2c.bn"),
        ("res3a_branch1", "Convolution", CONV, "base.backbone.res3.a.branch1.conv"),
        ("bn5c_branch2b", "BatchNorm", BATCHNORM, "base.backbone.res5.c.branch2b.bn"),
        ("pool1", "Pooling", POOL, "base.backbone.pool1"),
        ("fc1_voc12_c3", "Convolution", CONV, "base.aspp.c3"),
        ("conv1_res075", "Convolution", SKIP, ""),
        ("fc1_voc12_c0_res05", "Convolution", SKIP, ""),
    ],
)
def test_layer_names_map_to_modules(name, layer_type, kind, module):
    target = caffe_target(name, layer_type, "fc1_voc12", backbone_only=False)
    assert (target.kind, target.module) == (kind, module)


def test_unknown_and_mismatched_names_map_nowhere():
    assert caffe_target("res4b22_relu", "ReLU", "fc1_voc12", False) is None
    assert caffe_target("fc8_extra", "Convolution", "fc1_voc12", False) is None
    # A BatchNorm-named Scale layer (or vice versa) is not silently accepted.
    assert caffe_target("bn2a_branch1", "Scale", "fc1_voc12", False) is None
    assert caffe_target("fc1", "Convolution", "fc", True).kind == SKIP


def test_convolution_weight_and_bias_are_copied_exactly(tmp_path):
    path, layers = tiny_voc(tmp_path)
    state_dict, _ = convert_tiny(path)
    conv = by_name(layers, "res4a_branch2b")
    expected = np.array(conv.blobs[0].data, np.float32).reshape(tuple(conv.blobs[0].shape.dim))
    assert np.array_equal(state_dict["base.backbone.res4.a.branch2b.conv.weight"], expected)
    head = by_name(layers, "fc1_voc12_c2")
    assert np.array_equal(state_dict["base.aspp.c2.bias"], np.array(head.blobs[1].data))


def test_batchnorm_divides_by_the_moving_average_factor_and_scale_gives_affine(tmp_path):
    def zero_factor(layers):
        bn = by_name(layers, "bn3a_branch2a")
        bn.blobs[2].data[0] = 0.0  # Caffe: no statistics yet -> mean and variance 0

    path, layers = tiny_voc(tmp_path, zero_factor)
    state_dict, _ = convert_tiny(path)
    bn = by_name(layers, "bn_conv1")
    mean_sum, var_sum, factor = (np.array(b.data, np.float32) for b in bn.blobs)
    assert factor[0] != 1.0
    key = "base.backbone.conv1.bn."
    np.testing.assert_allclose(state_dict[key + "running_mean"], mean_sum / factor[0], rtol=1e-6)
    np.testing.assert_allclose(state_dict[key + "running_var"], var_sum / factor[0], rtol=1e-6)
    scale = by_name(layers, "scale_conv1")
    assert np.array_equal(state_dict[key + "weight"], np.array(scale.blobs[0].data, np.float32))
    assert np.array_equal(state_dict[key + "bias"], np.array(scale.blobs[1].data, np.float32))
    zeroed = "base.backbone.res3.a.branch2a.bn."
    assert not state_dict[zeroed + "running_mean"].any()
    assert not state_dict[zeroed + "running_var"].any()


def test_legacy_4d_blob_shapes_are_accepted(tmp_path):
    def legacy(layers):
        for layer in layers:
            if layer.type in ("BatchNorm", "Scale"):
                for blob in layer.blobs:
                    n = len(blob.data)
                    blob.ClearField("shape")
                    blob.num, blob.channels, blob.height, blob.width = 1, 1, 1, n

    path, layers = tiny_voc(tmp_path, legacy)
    state_dict, _ = convert_tiny(path)
    assert state_dict["base.backbone.res5.a.branch2c.bn.weight"].shape == (32 * NARROW,)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dilation", [1], "dilation (1, 1) in the file, (2, 2)"),
        ("pad", [1], "padding (1, 1) in the file, (2, 2)"),
        ("stride", [2], "stride (2, 2) in the file, (1, 1)"),
        ("kernel_size", [1], "kernel size (1, 1) in the file, (3, 3)"),
    ],
)
def test_convolution_geometry_is_checked_against_the_module(tmp_path, field, value, message):
    def edit(layers):
        param = by_name(layers, "res4a_branch2b").convolution_param
        param.ClearField(field)
        getattr(param, field).extend(value)

    path, _ = tiny_voc(tmp_path, edit)
    with pytest.raises(ConversionError, match="'res4a_branch2b'") as error:
        convert_tiny(path)
    assert message in str(error.value)


def test_batchnorm_eps_is_checked(tmp_path):
    def edit(layers):
        by_name(layers, "bn2a_branch2b").batch_norm_param.eps = 1e-3

    path, _ = tiny_voc(tmp_path, edit)
    with pytest.raises(ConversionError, match=r"'bn2a_branch2b'.*eps 0.001 in the file"):
        convert_tiny(path)


def test_scale_must_follow_its_batchnorm(tmp_path):
    def swap(layers):
        i = layers.index(by_name(layers, "bn2a_branch1"))
        layers[i], layers[i + 1] = layers[i + 1], layers[i]

    path, _ = tiny_voc(tmp_path, swap)
    with pytest.raises(ConversionError, match="'scale2a_branch1'.*no BatchNorm"):
        convert_tiny(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: setattr(p, "kernel_size", 2), "kernel size (2, 2) in the file, (3, 3)"),
        (lambda p: setattr(p, "pool", 1), "is not a windowed MAX pooling"),
        (lambda p: setattr(p, "round_mode", 1), "ceil_mode"),
    ],
)
def test_pooling_is_checked_against_the_models_max_pool(tmp_path, edit, message):
    path, _ = tiny_voc(tmp_path, lambda layers: edit(by_name(layers, "pool1").pooling_param))
    with pytest.raises(ConversionError, match="'pool1'") as error:
        convert_tiny(path)
    assert message in str(error.value)


def test_skipped_layers_are_reported_by_reason(tmp_path):
    layers = deeplab_caffe_layers(n_blocks=TINY, shared_blobs="all", base_width=NARROW)
    path = write_caffemodel(layers, tmp_path / "msc.caffemodel")
    state_dict, summary = convert_tiny(path)
    branch = summary.skipped["shared-weight multi-scale branch (res075/res05)"]
    assert "conv1_res075" in branch and "fc1_voc12_c3_res05" in branch
    assert "fc_fusion" in summary.skipped["parameter-free Eltwise"]
    assert summary.skipped["parameter-free SoftmaxWithLoss"] == ["loss"]
    mapped = summary.layers_mapped + sum(len(v) for v in summary.skipped.values())
    assert mapped + len(summary.checked) == summary.layers_read == len(layers)
    assert summary.tensors_written == len(state_dict) - summary.counters_zeroed


# -- bad input ------------------------------------------------------------------

def test_unmapped_parameter_layer_is_an_error(tmp_path):
    def extra(layers):
        layer = LayerParameter(name="fc8_extra", type="Convolution")
        array_to_blob(np.zeros((21, 32 * NARROW, 1, 1), np.float32), layer.blobs.add())
        layers.insert(-2, layer)

    path, _ = tiny_voc(tmp_path, extra)
    with pytest.raises(ConversionError, match="'fc8_extra'.*no rule maps it"):
        convert_tiny(path)


def test_a_tensor_filled_twice_is_an_error(tmp_path):
    def duplicate(layers):
        copy = LayerParameter()
        copy.CopyFrom(by_name(layers, "res2a_branch2a"))
        layers.insert(-2, copy)

    path, _ = tiny_voc(tmp_path, duplicate)
    with pytest.raises(ConversionError, match="already filled by layer 'res2a_branch2a'"):
        convert_tiny(path)


def test_shape_mismatch_names_the_layer(tmp_path):
    def wrong_shape(layers):
        blob = by_name(layers, "bn3a_branch2b").blobs[0]
        array_to_blob(np.zeros(NARROW, np.float32), blob)  # 2 * NARROW channels expected

    path, _ = tiny_voc(tmp_path, wrong_shape)
    with pytest.raises(ConversionError, match=r"'bn3a_branch2b'.*shape \[16\].*needs \[32\]"):
        convert_tiny(path)


def test_wrong_class_count_is_an_error(tmp_path):
    path, _ = tiny_voc(tmp_path)
    with pytest.raises(ConversionError, match="'fc1_voc12_c0'.*21 classes.*182 classes"):
        convert_tiny(path, n_classes=182)


def test_deeper_file_than_model_is_an_error(tmp_path):
    layers = deeplab_caffe_layers(n_blocks=(2, 1, 1, 1), multiscale=False, base_width=NARROW)
    path = write_caffemodel(layers, tmp_path / "deeper.caffemodel")
    with pytest.raises(ConversionError, match="'res2b_branch2a'.*does not have"):
        convert_tiny(path)


def test_blob_with_fewer_values_than_its_shape_is_an_error(tmp_path):
    def short(layers):
        blob = by_name(layers, "res2a_branch2c").blobs[0]
        del blob.data[-10:]

    path, _ = tiny_voc(tmp_path, short)
    expected = r"'res2a_branch2c' blob 0: holds \d+ values .* needs \d+ \(truncated"
    with pytest.raises(ConversionError, match=expected):
        convert_tiny(path)


def test_nan_weights_are_an_error(tmp_path):
    def damage(layers):
        by_name(layers, "conv1").blobs[0].data[5] = float("nan")

    path, _ = tiny_voc(tmp_path, damage)
    with pytest.raises(ConversionError, match="'conv1' blob 0: contains NaN"):
        convert_tiny(path)


def test_legacy_v1_layers_field_is_rejected(tmp_path):
    net = NetParameter(name="old")
    old = net.layers.add(name="conv1", type=4)  # V1LayerParameter.CONVOLUTION
    array_to_blob(np.zeros((64, 3, 7, 7), np.float32), old.blobs.add())
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(CheckpointError, match="legacy V1 'layers' format.*'conv1'"):
        read_caffemodel(path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file_is_one_clear_error(tmp_path, keep):
    path, _ = tiny_voc(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_caffemodel(path)


def test_file_cut_at_a_layer_boundary_is_an_error(tmp_path):
    path, _ = tiny_voc(tmp_path, lambda layers: layers[:60])
    with pytest.raises(ConversionError, match=r"got no weights.*last layer read was"):
        convert_tiny(path)


@pytest.mark.parametrize("content", [b"\xff" * 64, b"layer { name: 'conv1' }\n" * 20, b""])
def test_corrupt_or_foreign_bytes_are_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        read_caffemodel(path)


def test_existing_output_is_left_intact_after_a_failure(tmp_path):
    path, _ = tiny_voc(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    out = tmp_path / "out" / "model.pth"
    out.parent.mkdir()
    out.write_bytes(b"previous good weights")
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output", out)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert str(path) in result.stderr
    assert out.read_bytes() == b"previous good weights"
    assert os.listdir(out.parent) == ["model.pth"]


def test_cli_converts_a_tiny_model_from_a_config(tmp_path):
    path, _ = tiny_voc(tmp_path, n_classes=8)
    out = tmp_path / "toy.pth"
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output", out,
                     "--config", "config/toy.yaml")
    assert result.exit_code == 0, result.output
    model = DeepLabV2_ResNet101_MSC(8, n_blocks=TINY, base_width=NARROW)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)


# -- the protobuf schema ----------------------------------------------------------

def test_schema_field_numbers_match_caffe_proto():
    """Wire bytes pinned by hand from caffe.proto's field numbers."""
    layer = LayerParameter(name="c", type="Convolution")
    layer.convolution_param.num_output = 2
    layer.batch_norm_param.eps = 1.0
    layer.pooling_param.pad = 1
    layer.scale_param.bias_term = True
    blob = layer.blobs.add()
    blob.shape.dim.append(1)
    blob.data.append(1.0)
    wire = layer.SerializeToString()
    assert wire.startswith(b"\x0a\x01c\x12\x0bConvolution")  # name=1, type=2
    # blobs=7: BlobProto{ data=5 packed float [1.0], shape=7 {dim=1 packed [1]} }
    assert b"\x3a\x0b\x2a\x04\x00\x00\x80\x3f\x3a\x03\x0a\x01\x01" in wire
    assert b"\xd2\x06\x02\x08\x02" in wire  # convolution_param=106 {num_output=1: 2}
    assert b"\xca\x07\x02\x20\x01" in wire  # pooling_param=121 {pad=4: 1}
    assert b"\xda\x08\x05\x1d\x00\x00\x80\x3f" in wire  # batch_norm_param=139 {eps=3: 1.0}
    assert b"\xf2\x08\x02\x20\x01" in wire  # scale_param=142 {bias_term=4: true}
    net = NetParameter()
    net.layer.add(name="c")
    assert net.SerializeToString() == b"\xa2\x06\x03\x0a\x01c"  # layer=100


def test_array_to_blob_writes_what_a_plain_packed_float_field_writes():
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    fast = array_to_blob(values, BlobProto())
    plain = BlobProto()
    plain.shape.dim.extend([3, 4])
    plain.data.extend(values.ravel().tolist())
    assert fast.SerializeToString() == plain.SerializeToString()


def test_classifier_of_another_preset_hints_at_the_dataset_option(coco_full, tmp_path):
    path, _ = coco_full
    result = run_cli("--dataset", "voc12", "--caffemodel", path, "--output", tmp_path / "x.pth")
    assert result.exit_code == 1
    assert "'fc1' (Convolution): carries 2 blobs but no rule maps it" in result.stderr
    assert "is --dataset right?" in result.stderr


def test_damaged_layer_names_do_not_crash_the_reader(tmp_path):
    net = NetParameter()
    net.layer.add(name="x", type="ReLU")
    raw = net.SerializeToString().replace(b"\x0a\x01x", b"\x0a\x01\xff")  # invalid UTF-8
    path = tmp_path / "names.caffemodel"
    path.write_bytes(raw)
    (layer,) = read_caffemodel(path)
    assert layer.name == "\ufffd" and layer.type == "ReLU"


# -- the library steps convert.py wires together -------------------------------

def test_preset_paths_default_to_the_preset_and_refuse_to_overwrite_the_input(
        tmp_path, monkeypatch):
    voc = CAFFE_PRESETS["voc12"]
    caffemodel, output = preset_paths(voc)
    assert (str(caffemodel), str(output)) == (voc.caffemodel, voc.output)
    monkeypatch.chdir(tmp_path)  # the same file spelt two ways
    with pytest.raises(OutputError, match="output would overwrite the input caffemodel"):
        preset_paths(voc, tmp_path / "x.caffemodel", "x.caffemodel")


def test_target_model_comes_from_the_config_section():
    cfg = load_config("config/toy.yaml")
    model = target_model(CAFFE_PRESETS["voc12"], cfg.MODEL, cfg.DATASET.N_CLASSES)
    assert model.base.aspp["c0"].out_channels == cfg.DATASET.N_CLASSES
    with pytest.raises(ConfigError, match="unknown MODEL.NAME 'NoSuchNet'"):
        target_model(CAFFE_PRESETS["voc12"], SimpleNamespace(NAME="NoSuchNet"), 8)


def tiny_model():
    return DeepLabV2_ResNet101_MSC(8, n_blocks=TINY, base_width=NARROW)


def test_check_loads_accepts_a_complete_state_dict_and_a_backbone():
    state_dict = tiny_model().state_dict()
    check_loads(state_dict, tiny_model(), backbone_only=False, output="full.pth")
    backbone = {k: v for k, v in state_dict.items() if k.startswith("base.backbone.")}
    check_loads(backbone, tiny_model(), backbone_only=True, output="backbone.pth")


def test_check_loads_names_the_output_and_the_first_problem():
    state_dict = tiny_model().state_dict()
    del state_dict["base.aspp.c0.bias"]
    with pytest.raises(ConversionError, match=r"^full.pth: internal error, converted weights "
                                              r"do not load \(Error\(s\) in loading"):
        check_loads(state_dict, tiny_model(), backbone_only=False, output="full.pth")
    backbone = {k: v for k, v in state_dict.items() if k.startswith("base.backbone.")}
    del backbone["base.backbone.conv1.conv.weight"]
    with pytest.raises(ConversionError, match=r"backbone state dict does not fit the model "
                                              r"\(base.backbone.conv1.conv.weight\)"):
        check_loads(backbone, tiny_model(), backbone_only=True, output="backbone.pth")


def test_save_state_dict_turns_os_errors_into_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "x.pth"
    with pytest.raises(OutputError, match=r"a_file/x.pth: cannot write \(") as error:
        save_torch({"w": torch.zeros(1)}, out)
    assert "\n" not in str(error.value)
