"""predict.py and the Segmenter API: labels at each image's own size, many inputs, no surprises."""

import hashlib

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tests.tiny_model import tiny_setup

import predict
from libs.datasets.images import read_image_bgr
from libs.inference import segmenter as segmenter_module
from libs.inference.predict import network_input, predict_probs, resize_longer_side
from libs.inference.segmenter import Segmenter
from libs.utils.config import load_config


def run(*args):
    return CliRunner().invoke(predict.main, [str(a) for a in args])


def photo(path, width, height, seed=0):
    """A photo-like image: smooth colour gradients with a few blocks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                      np.full_like(x, 90)], -1).astype(np.uint8)
    for _ in range(3):
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[top:top + height // 3, left:left + width // 3] = rng.integers(0, 256, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}


@pytest.fixture
def tiny(toy_cfg, tmp_path):
    return tiny_setup(toy_cfg, tmp_path)


@pytest.mark.parametrize("crf", ["--no-crf", "--crf"])
def test_label_pngs_have_each_images_own_size(tiny, tmp_path, crf):
    config_path, checkpoint = tiny
    photos = tmp_path / "photos"
    photo(photos / "wide.jpg", 160, 120)
    photo(photos / "odd.png", 97, 131, seed=1)
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "labels"
    result = run("-c", config_path, "-m", checkpoint, photos, "-o", out, crf, "--overlay")
    assert result.exit_code == 0, result.output
    assert "notes.txt" in result.output and "left out" in result.output  # said, not silent
    assert sorted(p.name for p in out.iterdir()) == ["odd.png", "odd_overlay.png", "wide.png",
                                                     "wide_overlay.png"]
    cfg = load_config(config_path)
    segmenter = Segmenter.from_config(cfg, checkpoint, crf=crf == "--crf")
    for name, size in (("wide", (120, 160)), ("odd", (131, 97))):
        labels = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == size and labels.dtype == np.uint8
        assert cv2.imread(str(out / f"{name}_overlay.png")).shape == (*size, 3)
        image = read_image_bgr(next(photos.glob(f"{name}.*")), cfg.IMAGE.MEAN)
        np.testing.assert_array_equal(labels, segmenter(image))  # the API gives the same labels
    assert not list(out.glob("*.tmp*"))


def test_files_folders_and_globs_each_once_in_a_batch(tiny, tmp_path):
    config_path, checkpoint = tiny
    for i in range(3):
        photo(tmp_path / "a" / f"same{i}.jpg", 64, 48, seed=i)
    photo(tmp_path / "b" / "other.png", 50, 70)
    photo(tmp_path / "c" / "single.bmp", 33, 21)
    out = tmp_path / "out"
    result = run("-c", config_path, "-m", checkpoint, tmp_path / "a", str(tmp_path / "b" / "*.png"),
                 tmp_path / "c" / "single.bmp", "-o", out, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    sizes = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in out.iterdir()}
    assert sizes == {"same0.png": (48, 64), "same1.png": (48, 64), "same2.png": (48, 64),
                     "other.png": (70, 50), "single.png": (21, 33)}
    assert "5 label maps" in result.output


def test_batched_labels_equal_one_at_a_time(tiny):
    config_path, checkpoint = tiny
    segmenter = Segmenter.from_config(load_config(config_path), checkpoint)
    images = [np.random.default_rng(s).integers(0, 256, (37, 45, 3), dtype=np.uint8)
              for s in range(3)]
    for image, labels in zip(images, segmenter.segment_batch(images)):
        np.testing.assert_array_equal(labels, segmenter(image))
    rgb = segmenter(images[0][:, :, ::-1], rgb=True)
    np.testing.assert_array_equal(rgb, segmenter(images[0]))
    with pytest.raises(ValueError, match="one size"):
        segmenter.segment_batch([images[0], images[0][:30]])


def test_bands_give_the_probabilities_of_one_upsampling(tiny, monkeypatch):
    """The labels' banded upsampling equals evaluation's upsampling of the whole map."""
    config_path, checkpoint = tiny
    cfg = load_config(config_path)
    segmenter = Segmenter.from_config(cfg, checkpoint)
    image = np.random.default_rng(5).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    x = network_input(resize_longer_side(image, cfg.IMAGE.SIZE.DEMO), cfg.IMAGE.MEAN)
    with torch.inference_mode():
        expected = predict_probs(segmenter.model, x, image.shape[:2])[0].numpy()
    monkeypatch.setattr(segmenter_module, "BAND_VALUES", 8 * 130 * 7)  # 7 rows a band
    labels, probs = segmenter(image, probabilities=True)
    assert probs.shape == expected.shape
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(labels, segmenter(image))
    assert (labels == expected.argmax(0)).mean() > 0.999


def test_bad_inputs_are_one_line_and_write_nothing(tiny, tmp_path):
    config_path, checkpoint = tiny
    photos = tmp_path / "photos"
    first = photo(photos / "x.jpg", 40, 30)
    photo(photos / "x.png", 40, 30)  # the same stem
    (tmp_path / "empty").mkdir()
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "x.png").write_bytes(b"an earlier run")
    before = digests(tmp_path)
    cases = {
        "missing": ([tmp_path / "nope.jpg"], "nope.jpg: not found"),
        "repeated": ([first, photos / ".." / "photos" / "x.jpg"], "given twice"),
        "no match": ([str(tmp_path / "*.gif")], "*.gif: no file matches"),
        "empty folder": ([tmp_path / "empty"], "a folder with no image files"),
        "same stem": ([photos], "would both write"),
        "over an input": ([photos / "x.png", "-o", photos], "would overwrite the input image"),
        "earlier run": ([first, "-o", tmp_path / "done"], "add --overwrite"),
    }
    for case, (args, message) in cases.items():
        output = [] if "-o" in args else ["-o", tmp_path / "out"]
        result = run("-c", config_path, "-m", checkpoint, *args, *output)
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and message in lines[0], (case, lines)
        assert digests(tmp_path) == before, case
        assert not (tmp_path / "out").exists(), case
    result = run("-c", config_path, "-m", checkpoint, first, "-o", tmp_path / "done", "--overwrite")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "done" / "x.png"), cv2.IMREAD_UNCHANGED).shape == (30, 40)
