"""ONNX export: exact dynamic MSC sizes, ORT = PyTorch, export.py, demo.py --onnx, bad files."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from tests.tiny_model import randomised_model, tiny_setup

import demo
import export as export_script
from libs.datasets import load_class_names
from libs.inference.figure import class_shares, format_shares
from libs.inference.onnx_model import OnnxModel
from libs.utils.errors import CheckpointError, ConversionError
from libs.datasets.images import read_image_bgr
from libs.inference.predict import load_model, segment
from libs.inference.segmenter import Segmenter
from libs.models import DeepLabV2_ResNet101_MSC
from libs.models.export import ExportableMSC, caffe_scaled_side_exact, check_onnx_parity, default_onnx_path, dyadic_scale, export_onnx, input_is_dynamic
from libs.models.geometry import caffe_scaled_side, msc_resize_input, n_cells
from libs.utils.config import load_config

CPU = torch.device("cpu")
EXAMPLE = (65, 65)  # the traced size; every check below runs at other sizes
# Odd, non-square and not 8k + 1 (50x77): none is the example, so a frozen size shows.
SIZES = [(289, 353), (193, 257), (50, 77)]


VARIANTS = {"msc-caffe": ("caffe", False), "msc-pytorch": ("pytorch", False),
            "single": ("caffe", True)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (PyTorch network, ONNX path, ExportInfo), exported once for the module."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, (geometry, single) in VARIANTS.items():
        model = randomised_model(geometry)
        network = model.base if single else model
        info = export_onnx(network, folder / f"{name}.onnx", example_size=EXAMPLE)
        out[name] = (network, folder / f"{name}.onnx", info)
    return out


@pytest.mark.parametrize("scale", [0.5, 0.75, 0.25, 0.625, 1.5, 2.0, 1 / 1024])
def test_integer_caffe_size_is_pythons_round_for_every_side(scale):
    p, q = dyadic_scale(scale)
    sides = np.arange(1, 5001, dtype=np.int64)
    expected = [caffe_scaled_side(int(s), scale) for s in sides]
    assert caffe_scaled_side_exact(sides, p, q).tolist() == expected  # numpy int64
    assert caffe_scaled_side_exact(torch.from_numpy(sides), p, q).tolist() == expected
    assert [caffe_scaled_side_exact(int(s), p, q) for s in sides[:300]] == expected[:300]
    # The rounding is half to even: 0.5 * 289 = 144.5 -> 144, 0.5 * 291 = 145.5 -> 146.
    assert caffe_scaled_side_exact(290, 1, 2) == 145 and caffe_scaled_side_exact(292, 1, 2) == 147


def test_a_scale_that_cannot_be_exported_exactly_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"MSC scale 0.3 cannot be exported exactly"):
        dyadic_scale(0.3)
    model = DeepLabV2_ResNet101_MSC(3, n_blocks=(1, 1, 1, 1), base_width=8, msc_scales=(0.3,))
    with pytest.raises(ConversionError) as error:
        export_onnx(model.eval(), tmp_path / "m.onnx", example_size=EXAMPLE)
    assert len(str(error.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


@pytest.mark.parametrize("name", list(VARIANTS))
def test_export_is_valid_dynamic_and_matches_pytorch(exported, name, one_torch_thread):
    network, path, info = exported[name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert input_is_dynamic(proto)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert info.exporter == "torchscript" and info.n_folded == 17 and info.n_bytes > 0
    assert info.opset == next(o.version for o in proto.opset_import if o.domain == "")
    # Every BatchNorm is folded away in the file.
    assert "BatchNormalization" not in {node.op_type for node in proto.graph.node}
    errors = check_onnx_parity(network, path, SIZES, rtol=1e-4)
    assert list(errors) == SIZES
    assert all(0 <= e < 1e-4 for e in errors.values()), errors


def test_dynamic_batch_and_metadata_through_onnx_model(exported, one_torch_thread):
    for name, (network, path, _) in exported.items():
        model = OnnxModel(path, CPU)
        assert model.n_classes == 5
        if name == "single":
            assert not hasattr(model, "geometry")
        else:
            assert model.geometry == network.geometry
        assert model.eval() is model and model.to(CPU) is model
        x = torch.randn(3, 3, 41, 57) * 50
        logits = model(x)
        assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32
        assert logits.shape == (3, 5, n_cells(41), n_cells(57))
        with torch.inference_mode():
            reference = network(x)
        assert ((logits - reference).abs().max() / reference.abs().max()).item() < 1e-4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, called here
def test_parity_catches_a_size_frozen_into_the_graph(tmp_path):
    """The plain MSC traced as it is freezes the caffe extra-scale sizes: the check must fail."""
    model = randomised_model("caffe")
    path = tmp_path / "frozen.onnx"
    with pytest.warns(torch.jit.TracerWarning):
        torch.onnx.export(model, (torch.zeros(1, 3, *EXAMPLE),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}})
    assert input_is_dynamic(onnx.load(str(path)))  # the input alone does not tell
    errors = check_onnx_parity(model, path, [EXAMPLE])
    assert errors[EXAMPLE] < 1e-4  # right at the traced size only
    with pytest.raises(ConversionError, match=r"frozen.onnx: ONNX Runtime differs from PyTorch by "
                                          r"\S+ \(max\|a-b\|/max\|b\|\) at 97x129, tolerance"):
        check_onnx_parity(model, path, [(97, 129)])
    static = tmp_path / "static.onnx"
    torch.onnx.export(model.base, (torch.zeros(1, 3, *EXAMPLE),), str(static), dynamo=False)
    assert not input_is_dynamic(onnx.load(str(static)))


def test_a_frozen_value_stops_the_export(tmp_path, monkeypatch):
    """The caffe sizes written with int(), as the MSC computes them, are refused at export."""
    monkeypatch.setattr(ExportableMSC, "resize_input",
                        lambda self, x, i: msc_resize_input(x, self.scales[i], self.geometry))
    with pytest.raises(ConversionError) as error:
        export_onnx(randomised_model("caffe"), tmp_path / "m.onnx", example_size=EXAMPLE)
    assert str(error.value).startswith("the TorchScript exporter froze a value into the "
                                       "graph: Converting a tensor to a Python integer")
    assert len(str(error.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_segment_through_onnx_gives_the_torch_label_map(exported):
    network, path, _ = exported["msc-caffe"]
    image = np.random.default_rng(0).integers(0, 256, (52, 65, 3), dtype=np.uint8)
    mean = [104.0, 117.0, 123.0]
    probs_torch, labels_torch = segment(network, image, mean, CPU)
    probs_onnx, labels_onnx = segment(OnnxModel(path, CPU), image, mean, CPU)
    assert probs_onnx.shape == (5, 52, 65)
    np.testing.assert_allclose(probs_onnx, probs_torch, atol=1e-5)
    np.testing.assert_array_equal(labels_onnx, labels_torch)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bad_onnx_files_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model" * 20)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 5, 5),), str(foreign), dynamo=False)
    cases = {tmp_path / "missing.onnx": "missing.onnx: ONNX model not found",
             garbage: "garbage.onnx: not a usable ONNX model",
             foreign: "foreign.onnx: no DeepLab metadata"}
    for path, expected in cases.items():
        with pytest.raises(CheckpointError) as error:
            OnnxModel(path, CPU)
        assert len(str(error.value).splitlines()) == 1 and expected in str(error.value)


def test_wrong_class_count_is_one_line(exported):
    path = exported["single"][1]
    assert OnnxModel(path, CPU, n_classes=5).n_classes == 5
    with pytest.raises(CheckpointError, match=r"single.onnx: the ONNX model has 5 classes, the "
                                             r"config asks for 8 \(DATASET.N_CLASSES\)$"):
        OnnxModel(path, CPU, n_classes=8)


def test_default_output_paths(tmp_path):
    assert default_onnx_path(tmp_path / "w" / "final.pth") == tmp_path / "w" / "final.onnx"
    assert default_onnx_path("final.pth", single_scale=True).name == "final_single.onnx"
    released = tmp_path / "released"
    assert default_onnx_path("voc12", released_dir=released) == released / "voc12.onnx"


def run_export(*args):
    return CliRunner().invoke(export_script.main, [str(a) for a in args])


def test_export_command_writes_checks_and_refuses_to_overwrite(toy_cfg, tmp_path,
                                                               one_torch_thread):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    result = run_export("-c", config_path, "-m", checkpoint)
    assert result.exit_code == 0, result.output
    output = tmp_path / "tiny.onnx"
    lines = result.output.strip().splitlines()
    assert re.match(rf"^{re.escape(str(output))}: MSC \(caffe geometry\), [\d.]+ MiB, opset \d+, "
                    r"torchscript exporter, 17 BatchNorms folded, exported in [\d.]+ s; "
                    r"onnx.checker: ok$", lines[0]), lines[0]
    for line, size in zip(lines[1:], ["353x289", "257x193"]):  # width x height
        error = float(re.match(rf"^ONNX Runtime vs PyTorch at {size}: max relative error "
                               r"(\S+) \(tolerance 1e-04\)$", line).group(1))
        assert error < 1e-4
    assert len(lines) == 3
    assert OnnxModel(output, CPU).n_classes == toy_cfg.DATASET.N_CLASSES

    before = output.read_bytes()
    result = run_export("-c", config_path, "-m", checkpoint)
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {output}: already exists; pass --force to replace it"
    assert output.read_bytes() == before

    result = run_export("-c", config_path, "-m", checkpoint, "--single-scale", "-o", output,
                        "--check-sizes", "57x41", "--example-size", "49x49", "--force")
    assert result.exit_code == 0, result.output
    assert f"{output}: single-scale" in result.output and "at 57x41" in result.output
    assert len(result.output.strip().splitlines()) == 2
    assert not hasattr(OnnxModel(output, CPU), "geometry")  # replaced by the single-scale export
    assert sorted(p.name for p in tmp_path.rglob("*.tmp*")) == []


def test_export_command_usage(toy_cfg, tmp_path):
    result = run_export("-h")
    assert result.exit_code == 0 and "--check-sizes" in result.output and "--force" in result.output
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    result = run_export("-c", config_path, "-m", checkpoint, "--check-sizes", "289by353")
    assert result.exit_code == 2 and "expected WxH sizes such as 353x289" in result.output
    result = run_export("-c", config_path, "-m", tmp_path / "none.pth", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "none.pth" in result.output and not (tmp_path / "x.onnx").exists()
    result = run_export("-c", config_path, "-m", checkpoint, "-o", checkpoint, "--force")
    assert result.exit_code == 1 and "is the model's weight file" in result.output


def run_demo(*args):
    return CliRunner().invoke(demo.main, [str(a) for a in args])


def test_demo_onnx_gives_the_torch_label_map(toy_cfg, synthetic_root, tmp_path,
                                             one_torch_thread):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    cfg = load_config(config_path)
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(load_model(cfg, checkpoint, CPU), onnx_path, example_size=EXAMPLE)
    image_path = sorted((Path(synthetic_root) / "images").glob("*.jpg"))[0]
    image = read_image_bgr(image_path, cfg.IMAGE.MEAN)
    labels_torch = Segmenter.from_config(cfg, checkpoint)(image)
    labels_onnx = Segmenter.from_config(cfg, onnx=onnx_path)(image)
    np.testing.assert_array_equal(labels_onnx, labels_torch)

    output = tmp_path / "figure.png"
    result = run_demo("-c", config_path, "--onnx", onnx_path, "-i", image_path, "-o", output,
                      "--no-show")
    assert result.exit_code == 0, result.output
    assert output.is_file()
    # It prints the classes and shares of the torch label map.
    shares = format_shares(class_shares(labels_torch, cfg.DATASET.N_CLASSES),
                           load_class_names(cfg.DATASET.LABELS))
    height, width = labels_torch.shape
    assert result.output == (f"{image_path} ({width}x{height}): {len(shares.splitlines())} "
                             f"classes found "
                             f"(id, name, share of pixels)\n{shares}\nfigure: {output}\n")


def test_demo_model_source_errors(toy_cfg, synthetic_root, tmp_path):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    image_path = sorted((Path(synthetic_root) / "images").glob("*.jpg"))[0]
    neither = run_demo("-c", config_path, "-i", image_path, "--no-show")
    both = run_demo("-c", config_path, "-m", checkpoint, "--onnx", tmp_path / "m.onnx",
                    "-i", image_path, "--no-show")
    for result, word in ((neither, "neither"), (both, "both")):
        assert result.exit_code == 2
        assert f"give either --model-path (PyTorch weights) or --onnx (an export.py file), " \
               f"not {word}" in result.output
    bf16 = run_demo("-c", config_path, "--onnx", tmp_path / "m.onnx", "-i", image_path,
                    "--precision", "bf16", "--no-show")
    assert bf16.exit_code == 2 and "an ONNX model runs in fp32" in bf16.output

    wrong = tmp_path / "five.onnx"
    export_onnx(randomised_model().base, wrong, example_size=EXAMPLE)
    for path, expected in ((wrong, "five.onnx: the ONNX model has 5 classes, the config asks "
                                   "for 8 (DATASET.N_CLASSES)"),
                           (tmp_path / "none.onnx", "none.onnx: ONNX model not found")):
        result = run_demo("-c", config_path, "--onnx", path, "-i", image_path, "--no-show",
                          "-o", tmp_path / "f.png")
        assert result.exit_code == 1
        assert result.output.strip() == f"Error: {path.parent}/{expected}", result.output
        assert not (tmp_path / "f.png").exists()
