"""demo.py: resizing, class shares, the figure's panels, the saved file, and every bad input."""

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tests.tiny_model import tiny_setup

import demo
from docs import make_data_figure
from libs.datasets import load_class_names
from libs.datasets.images import read_image_bgr
from libs.inference import figure as demo_figure
from libs.inference.crf import DenseCRF
from libs.inference.predict import load_model, segment
from libs.inference.segmenter import Segmenter
from libs.models import build_model
from libs.utils.atomic import save_torch
from libs.utils.config import load_config
from libs.utils.sizes import longer_side_size
from libs.utils.visualize import colorize, palette

CPU = torch.device("cpu")
SEED = 0
LINE = re.compile(r"^\s+(\d+)\s+(\S+)\s+([\d.]+)%$")


def first_test_image(synthetic_root):
    return sorted((Path(synthetic_root) / "images").glob("*.jpg"))[0]


def run(*args):
    return CliRunner().invoke(demo.main, [str(a) for a in args])


@pytest.mark.parametrize("size, longer, expected", [
    ((64, 80), 65, (52, 65)),
    ((480, 640), 513, (385, 513)),
    ((640, 427), 513, (513, 342)),
    ((513, 513), 513, (513, 513)),
])
def test_longer_side_size_keeps_aspect(size, longer, expected):
    assert longer_side_size(*size, longer) == expected


def test_class_shares_sorted_by_share_and_ignore_absent_classes():
    label_map = np.array([[2, 2, 2, 0], [2, 5, 5, 0]])
    shares = demo_figure.class_shares(label_map, n_classes=6)
    assert [c for c, _ in shares] == [2, 0, 5]
    assert [s for _, s in shares] == pytest.approx([0.5, 0.25, 0.25])


def test_class_panel_fills_the_mask_with_the_class_colour_and_rings_it():
    image = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[8:12, 8:12] = True
    # Grey and dark classes get a white ring, light ones a black ring.
    for colour, ring in (((128, 128, 128), (255, 255, 255)), ((0, 0, 64), (255, 255, 255)),
                         ((192, 192, 128), (0, 0, 0))):
        out = demo_figure.class_panel_picture(image, mask, colour)
        assert (out[mask] == colour).all()  # exactly the legend's colour
        assert out[7, 10].tolist() == list(ring) and out[12, 10].tolist() == list(ring)
        grey = round(100 * demo_figure.BACKGROUND_BRIGHTNESS)
        assert out[0, 0].tolist() == [grey] * 3 and out[19, 19].tolist() == [grey] * 3


def test_cli_prints_classes_and_figure_has_one_panel_per_class(toy_cfg, synthetic_root, tmp_path):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    image_path = first_test_image(synthetic_root)
    output = tmp_path / "figure.png"
    result = run("-c", config_path, "-m", checkpoint, "-i", image_path, "-o", output, "--no-show")
    assert result.exit_code == 0, result.output

    # Printed: the image's own size (80x64; the network saw it at 65x52), then the classes.
    assert f"{image_path} (80x64)" in result.output
    printed = [LINE.match(line).groups() for line in result.output.splitlines()
               if LINE.match(line)]
    assert len(printed) >= 2, "the seed should give a map with several classes"
    assert sum(float(share) for _, _, share in printed) == pytest.approx(100, abs=0.05)
    names = load_class_names(toy_cfg.DATASET.LABELS)
    assert all(names[int(i)] == name for i, name, _ in printed)

    # The saved figure is a readable image of the figure's size.
    saved = cv2.imread(str(output))
    assert saved is not None
    assert not list(output.parent.glob("*.tmp*"))

    # The same pipeline in-process: the panels are exactly the printed classes, in order.
    cfg = load_config(config_path)
    image = read_image_bgr(image_path)
    label_map = Segmenter.from_config(cfg, checkpoint)(image)
    assert label_map.shape == image.shape[:2]
    shares = demo_figure.class_shares(label_map, cfg.DATASET.N_CLASSES)
    figure = demo_figure.build_figure(image[:, :, ::-1], label_map, names, shares)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:3] == ["input", "prediction", "classes"]
    with_panel = [(name, share) for _, name, share in printed
                  if float(share) >= demo_figure.MIN_SHARE * 100][:demo_figure.TOP_K]
    assert titles[3:] == [f"{name} ({float(share):.1f}%)" for name, share in with_panel]
    legend = [text.get_text() for text in figure.axes[2].get_legend().get_texts()]
    assert [label.split("  ")[0] for label in legend] == [name for _, name, _ in printed]
    width, height = figure.get_size_inches() * figure.dpi
    assert saved.shape[:2] == (round(height), round(width))
    # The label map and each class panel use the palette's colours.
    colours = palette(len(names))
    np.testing.assert_array_equal(np.asarray(figure.axes[1].images[0].get_array()),
                                  colours[label_map])
    for ax, (class_id, _) in zip(figure.axes[3:], shares):
        expected = demo_figure.class_panel_picture(image[:, :, ::-1], label_map == class_id,
                                                   colours[class_id])
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), expected)


def test_cli_default_output_in_current_directory_and_label_png(toy_cfg, synthetic_root,
                                                              tmp_path, monkeypatch):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    data = tmp_path / "dataset"
    data.mkdir()
    image_path = data / "picture.jpg"
    image_path.write_bytes(first_test_image(synthetic_root).read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run("-c", config_path, "-m", checkpoint, "-i", image_path, "--crf", "--no-show",
                 "--save-label", "labels/picture.png")
    assert result.exit_code == 0, result.output
    assert "(80x64, CRF)" in result.output
    assert cv2.imread(str(work / "picture_segmentation.png")) is not None
    assert sorted(p.name for p in data.iterdir()) == ["picture.jpg"]  # nothing beside the input
    saved = cv2.imread(str(work / "labels" / "picture.png"), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint8 and saved.ndim == 2
    cfg = load_config(config_path)
    label_map = Segmenter.from_config(cfg, checkpoint, crf=True)(read_image_bgr(image_path))
    assert saved.shape == (64, 80)  # the image's size
    np.testing.assert_array_equal(saved, label_map)
    assert "label map: labels/picture.png" in result.output
    assert not list(work.rglob("*.tmp*"))


def test_outputs_never_overwrite_the_input_image(toy_cfg, synthetic_root, tmp_path, monkeypatch):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    image_path = tmp_path / "x_segmentation.png"
    cv2.imwrite(str(image_path), np.full((8, 10, 3), 7, np.uint8))
    before = image_path.read_bytes()
    monkeypatch.chdir(tmp_path)
    cases = {  # (extra arguments, expected message)
        "--output": (["-o", image_path],
                     "x_segmentation.png: --output would overwrite the input image"),
        "--save-label": (["-o", "fig.png", "--save-label", "./x_segmentation.png"],
                         "--save-label would overwrite the input image"),
        "label format": (["-o", "fig.png", "--save-label", "labels.jpg"],
                         "labels.jpg: --save-label writes a PNG"),
        "same file": (["-o", "fig.png", "--save-label", "fig.png"],
                      "--save-label and --output name the same file"),
    }
    for case, (extra, message) in cases.items():
        result = run("-c", config_path, "-m", checkpoint, "-i", "x_segmentation.png", "--no-show",
                     *extra)
        assert result.exit_code == 1, (case, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (case, result.output)
        assert image_path.read_bytes() == before, case
    written = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png")
    assert written == ["x_segmentation.png"]


def bad_inputs(cfg, synthetic_root, tmp_path):
    config_path, checkpoint = tiny_setup(cfg, tmp_path)
    image = first_test_image(synthetic_root)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image" * 10)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(image.read_bytes()[:400])
    wrong_classes = tmp_path / "wrong_classes.pth"
    torch.manual_seed(SEED)
    other = cfg.deepcopy()
    other.DATASET.N_CLASSES = 5
    save_torch({"model": build_model(other.MODEL, other.DATASET.N_CLASSES).state_dict()}, wrong_classes)
    broken_weights = tmp_path / "broken.pth"
    broken_weights.write_bytes(checkpoint.read_bytes()[:1000])
    return {
        "missing image": ([config_path, checkpoint, tmp_path / "nope.jpg"],
                          ["nope.jpg", "not found"]),
        "unreadable image": ([config_path, checkpoint, garbage], ["garbage.jpg", "corrupt"]),
        "truncated image": ([config_path, checkpoint, truncated], ["truncated.jpg", "truncated"]),
        "missing checkpoint": ([config_path, tmp_path / "none.pth", image],
                               ["none.pth", "not found"]),
        "truncated checkpoint": ([config_path, broken_weights, image], ["broken.pth", "corrupt"]),
        "wrong class count": ([config_path, wrong_classes, image],
                              ["wrong_classes.pth", "5 classes", "asks for 8"]),
        "missing config": ([tmp_path / "none.yaml", checkpoint, image],
                           ["none.yaml", "not found"]),
    }


def test_bad_inputs_give_one_clear_line_and_keep_existing_output(toy_cfg, synthetic_root,
                                                                 tmp_path):
    output = tmp_path / "kept.png"
    output.write_bytes(b"previous figure")
    for case, (paths, expected) in bad_inputs(toy_cfg, synthetic_root, tmp_path).items():
        config_path, model_path, image_path = paths
        result = run("-c", config_path, "-m", model_path, "-i", image_path, "-o", output,
                     "--no-show")
        assert result.exit_code == 1, (case, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (case, result.output)
        for fragment in expected:
            assert fragment in lines[0], (case, lines[0])
        assert output.read_bytes() == b"previous figure", case
    assert sorted(p.name for p in tmp_path.glob("*.tmp*")) == []


def test_unsupported_figure_format_is_one_line(toy_cfg, synthetic_root, tmp_path):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    result = run("-c", config_path, "-m", checkpoint, "-i", first_test_image(synthetic_root),
                 "-o", tmp_path / "figure.xyz", "--no-show")
    assert result.exit_code == 1
    assert "figure.xyz: unsupported figure format '.xyz'" in result.output
    assert not list(tmp_path.glob("figure.xyz*"))


def test_show_without_display_is_an_error(toy_cfg, synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "display_available", lambda: False)
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    result = run("-c", config_path, "-m", checkpoint, "-i", first_test_image(synthetic_root), "--show")
    assert result.exit_code == 1
    assert "--show: no display available" in result.output


def test_data_figure_shows_augmented_samples_over_their_labels(toy_cfg):
    from libs.datasets import build_dataset, to_rgb_uint8

    n_samples = 3
    figure = make_data_figure.data_figure(toy_cfg, n_samples)
    assert len(figure.axes) == 2 * n_samples
    dataset = build_dataset(toy_cfg, "train", augment=True)
    for column in range(n_samples):
        _, image, label = dataset[column]
        shown_image = np.asarray(figure.axes[2 * column].images[0].get_array())
        shown_label = np.asarray(figure.axes[2 * column + 1].images[0].get_array())
        np.testing.assert_array_equal(shown_image, to_rgb_uint8(image, toy_cfg.IMAGE.MEAN))
        np.testing.assert_array_equal(
            shown_label, colorize(label.numpy(), 8, toy_cfg.DATASET.IGNORE_LABEL))
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == load_class_names(toy_cfg.DATASET.LABELS) + ["ignored"]


def test_data_figure_command_saves_the_figure(toy_cfg, tmp_path):
    config_path, _ = tiny_setup(toy_cfg, tmp_path)
    output = tmp_path / "data.png"
    result = CliRunner().invoke(make_data_figure.main,
                                ["-c", str(config_path), "-o", str(output), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"figure: {output}"
    assert cv2.imread(str(output)) is not None
    result = CliRunner().invoke(make_data_figure.main,
                                ["-c", str(config_path), "-o", str(tmp_path / "data.xyz")])
    assert result.exit_code == 1
    assert "data.xyz: unsupported figure format '.xyz'" in result.output


def test_data_figure_runs_as_a_module_from_the_repository_root():
    repo = Path(demo.__file__).resolve().parent
    result = subprocess.run([sys.executable, "-m", "docs.make_data_figure", "--help"], cwd=repo,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "docs/data.png" in result.stdout


def test_segment_with_crf_needs_the_crf_picture_choice(toy_cfg, tmp_path):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    cfg = load_config(config_path)
    model = load_model(cfg, checkpoint, CPU)
    image = np.zeros((8, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="legacy_mean_subtracted"):
        segment(model, image, cfg.IMAGE.MEAN, CPU, crf=DenseCRF.from_config(cfg.CRF))


def test_a_second_image_path_is_an_error_not_ignored(toy_cfg, synthetic_root, tmp_path):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    image = first_test_image(synthetic_root)
    result = run("-c", config_path, "-m", checkpoint, "-i", image, "-i", image, "--no-show",
                 "-o", tmp_path / "figure.png")
    assert result.exit_code == 2
    assert "--image-path given 2 times" in result.output and "predict.py" in result.output
    assert not (tmp_path / "figure.png").exists()
