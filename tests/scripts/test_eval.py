import importlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from tests.inference.test_metric import scores

from libs.datasets import build_dataset, to_rgb_uint8
from libs.models import build_model
from libs.inference.crf import DenseCRF, legacy_crf_image
from libs.inference.metric import SCORE_NAMES
from libs.inference.predict import crf_image, predict_probs
from libs.inference.evaluation import EvalOptions, default_output_path

eval_script = importlib.import_module("eval")  # the script; "eval" would shadow the builtin


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_config(cfg, path):
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _tiny_model(cfg, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    # Random ASPP weights with a spread large enough that every class gets predicted somewhere.
    for name, param in model.named_parameters():
        if ".aspp." in name:
            torch.nn.init.normal_(param, std=0.5)
    return model.eval()


@pytest.fixture
def setup(toy_cfg, tmp_path):
    cfg_path = _write_config(toy_cfg, tmp_path / "toy.yaml")
    model = _tiny_model(toy_cfg)
    ckpt = tmp_path / "models" / "checkpoint_2.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "iteration": 2}, ckpt)
    return toy_cfg, cfg_path, ckpt, model


def _run(*args):
    result = CliRunner().invoke(eval_script.main, [str(a) for a in args])
    return result


def _direct_predictions(cfg, model, crf=None, legacy=False):
    """Ground truths, plain predictions and (with ``crf``) CRF predictions, computed by hand."""
    dataset = build_dataset(cfg, "test", augment=False)
    truths, preds, crf_preds = [], [], []
    with torch.no_grad():
        for _, image, label in dataset:
            logits = model(image[None])
            up = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=True)
            prob = F.softmax(up, dim=1)[0]
            truths.append(label.numpy())
            preds.append(prob.argmax(dim=0).numpy())
            if crf is not None:
                rgb = legacy_crf_image(image.numpy()) if legacy else to_rgb_uint8(image, cfg.IMAGE.MEAN)
                crf_preds.append(crf(rgb, prob.numpy()).argmax(axis=0))
    return truths, preds, crf_preds


def _assert_same_scores(results, expected):
    for name in SCORE_NAMES:
        assert results[name] == pytest.approx(expected[name], abs=1e-12), name
    got = [c["iou"] for c in results["class_iou"]]
    want = [None if np.isnan(v) else v for v in expected["class_iou"].values()]
    assert got == pytest.approx(want, abs=1e-12)


def test_eval_matches_direct_computation(setup):
    cfg, cfg_path, ckpt, model = setup
    result = _run("--config", cfg_path, "--model-path", ckpt, "--no-cuda")
    assert result.exit_code == 0, result.output
    out = ckpt.with_name("checkpoint_2_test.json")  # next to the model
    results = json.loads(out.read_text())
    truths, preds, _ = _direct_predictions(cfg, model)
    expected = scores(truths, preds, cfg.DATASET.N_CLASSES)
    _assert_same_scores(results, expected)
    assert results["n_images"] == len(truths) == 4
    assert results["n_pixels"] == sum(int((t != cfg.DATASET.IGNORE_LABEL).sum()) for t in truths)
    assert np.array(results["confusion_matrix"]).sum() == results["n_pixels"]
    assert results["class_iou"][0]["name"] == "grass"
    # The table: the four headline numbers in the README's order, then the class names.
    labels = ["Pixel Accuracy", "Mean Accuracy", "Mean IoU", "Frequency Weighted IoU"]
    where = [result.output.find(f"{label:<24}") for label in labels]
    assert -1 not in where and where == sorted(where), where
    assert f"{expected['mean_iou'] * 100:6.2f}%" in result.output
    assert "grass" in result.output and "tile" in result.output
    assert not list(out.parent.glob("*.tmp*"))

    # Test-time augmentation with the single scale 1.0 and no flip is plain evaluation.
    tta = ckpt.with_name("tta.json")
    result = _run("-c", cfg_path, "-m", ckpt, "-o", tta, "--scales", "1.0", "--no-flip",
                  "--no-cuda")
    assert result.exit_code == 0, result.output
    assert json.loads(tta.read_text())["confusion_matrix"] == results["confusion_matrix"]


def test_eval_with_crf_matches_direct_crf(setup, tmp_path):
    cfg, cfg_path, ckpt, model = setup
    out = tmp_path / "crf.json"
    result = _run("-c", cfg_path, "-m", ckpt, "--crf", "--n-jobs", 2, "-o", out, "--no-cuda")
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    crf = DenseCRF.from_config(cfg.CRF)
    truths, plain_preds, preds = _direct_predictions(cfg, model, crf=crf)
    _assert_same_scores(results, scores(truths, preds, cfg.DATASET.N_CLASSES))
    assert results["crf"]["bi_xy_std"] == cfg.CRF.BI_XY_STD
    assert results["crf"] == {
        "iter_max": 10, "pos_w": 3.0, "pos_xy_std": 1.0, "bi_w": 4.0, "bi_xy_std": 67.0,
        "bi_rgb_std": 3.0, "prune_threshold": cfg.CRF.PRUNE_THRESHOLD, "backend": "pydensecrf",
        "legacy_mean_subtracted_image": False,
    }
    assert list(results)[:5] == ["config", "model_path", "precision", "split", "n_images"]
    assert results["precision"] == "fp32"
    assert any((a != b).any() for a, b in zip(preds, plain_preds))  # the CRF changed something


def test_eval_scores_the_same_with_either_crf_backend(setup, tmp_path, one_torch_thread):
    cfg, cfg_path, ckpt, _ = setup
    results = {}
    for backend in ("pydensecrf", "torch"):
        out = tmp_path / f"crf_{backend}.json"
        result = _run("-c", cfg_path, "-m", ckpt, "--crf", "--crf-backend", backend, "-o", out,
                      "--no-cuda")
        assert result.exit_code == 0, result.output
        results[backend] = json.loads(out.read_text())
        assert results[backend]["crf"]["backend"] == backend
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert round(results["torch"][key], 4) == round(results["pydensecrf"][key], 4), key
    assert "torch" in _run("-h").output  # --crf-backend is offered


def test_legacy_switch_feeds_the_crf_the_mean_subtracted_image(toy_cfg):
    image = torch.from_numpy(np.random.default_rng(0).normal(0, 60, (3, 5, 7)).astype(np.float32))
    toy_cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE = False
    np.testing.assert_array_equal(crf_image(image, toy_cfg.IMAGE.MEAN, toy_cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE),
                                  to_rgb_uint8(image, toy_cfg.IMAGE.MEAN))
    toy_cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE = True
    np.testing.assert_array_equal(crf_image(image, toy_cfg.IMAGE.MEAN, toy_cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE),
                                  legacy_crf_image(image.numpy()))


def test_multi_scale_flip_evaluation_runs_and_is_recorded(setup, tmp_path):
    _, cfg_path, ckpt, _ = setup
    multi = tmp_path / "multi.json"
    result = _run("-c", cfg_path, "-m", ckpt, "-o", multi, "--scales", "0.75,1.25", "--flip",
                  "--limit", 2, "--no-cuda")
    assert result.exit_code == 0, result.output
    results = json.loads(multi.read_text())
    assert results["scales"] == [0.75, 1.25] and results["flip"] is True
    assert results["n_images"] == 2
    exact = DenseCRF(10, 3, 1, 4, 67, 3)
    multi_flip = EvalOptions("test", exact, tta_scales=(0.75, 1.25), flip=True)
    assert default_output_path(ckpt, multi_flip).name == (
        "checkpoint_2_test_ms0.75-1.25_flip_crf.json")
    pruned = EvalOptions("test", exact.with_prune_threshold(0.05))
    assert default_output_path(ckpt, pruned).name == "checkpoint_2_test_crf-prune0.05.json"
    assert default_output_path(ckpt, EvalOptions("train")).name == "checkpoint_2_train.json"
    assert default_output_path(ckpt, EvalOptions("test", exact, flip=True, limit=2)).name == (
        "checkpoint_2_test_first2_flip_crf.json")
    # eval.py names a --limit run by its limit: a quick check never replaces the full result.
    result = _run("-c", cfg_path, "-m", ckpt, "--limit", 2, "--no-cuda")
    assert result.exit_code == 0, result.output
    assert json.loads(ckpt.with_name("checkpoint_2_test_first2.json").read_text())[
        "n_images"] == 2
    released = tmp_path / "models" / "released"
    assert default_output_path("voc12", EvalOptions("val", exact), released) == (
        released / "voc12_val_crf.json")


def test_predict_probs_averages_probabilities_over_scales_and_flips(toy_cfg):
    model = _tiny_model(toy_cfg)
    x = torch.randn(1, 3, 33, 49)
    size = (33, 49)

    def probs(inp):
        return F.softmax(F.interpolate(model(inp), size=size, mode="bilinear",
                                       align_corners=True), dim=1)

    with torch.no_grad():
        got = predict_probs(model, x, size, tta_scales=(0.5, 1.0), flip=True)
        # Caffe's corner-aligned view: round((side - 1) * 0.5) + 1 = 17 x 25 (both 8k+1).
        small = F.interpolate(x, size=(17, 25), mode="bilinear", align_corners=True)
        want = (probs(small) + probs(small.flip(-1)).flip(-1) + probs(x)
                + probs(x.flip(-1)).flip(-1)) / 4
        plain = predict_probs(model, x, size)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(plain, probs(x), rtol=0, atol=0)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(1, *size))


def _one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_checkpoint_is_one_clear_error(setup, tmp_path):
    _, cfg_path, _, _ = setup
    missing = tmp_path / "nope.pth"
    _one_line_error(_run("-c", cfg_path, "-m", missing, "--no-cuda"),
                    str(missing), "not found")


def test_corrupt_checkpoint_is_one_clear_error(setup, tmp_path):
    _, cfg_path, ckpt, _ = setup
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    _one_line_error(_run("-c", cfg_path, "-m", truncated, "--no-cuda"), str(truncated))
    assert not truncated.with_name("truncated_test.json").exists()


def test_checkpoint_of_another_class_count_is_one_clear_error(setup, tmp_path):
    cfg, cfg_path, _, _ = setup
    other = cfg.deepcopy()
    other.DATASET.N_CLASSES = 5
    ckpt = tmp_path / "five.pth"
    torch.save({"model": build_model(other.MODEL, other.DATASET.N_CLASSES).state_dict()}, ckpt)
    _one_line_error(_run("-c", cfg_path, "-m", ckpt, "--no-cuda"),
                    str(ckpt), "5 classes", "asks for 8")


def test_missing_dataset_is_one_clear_error(setup, tmp_path):
    cfg, _, ckpt, _ = setup
    cfg = cfg.deepcopy()
    cfg.DATASET.ROOT = str(tmp_path / "no-such-dataset")
    cfg.DATASET.SYNTHETIC = None
    cfg_path = _write_config(cfg, tmp_path / "missing-data.yaml")
    out = tmp_path / "out.json"
    _one_line_error(_run("-c", cfg_path, "-m", ckpt, "-o", out, "--no-cuda"),
                    "no-such-dataset", "not found")
    assert not out.exists()


def test_unknown_model_name_is_one_clear_error(setup, tmp_path):
    cfg, _, ckpt, _ = setup
    cfg = cfg.deepcopy()
    cfg.MODEL.NAME = "DeepLabV9"
    cfg_path = _write_config(cfg, tmp_path / "unknown-model.yaml")
    _one_line_error(_run("-c", cfg_path, "-m", ckpt, "--no-cuda"),
                    str(cfg_path), "DeepLabV9")


def test_bad_options_are_clear_errors(setup):
    _, cfg_path, ckpt, _ = setup
    result = _run("-c", cfg_path, "-m", ckpt, "--scales", "1.0,big")
    assert result.exit_code == 2 and "comma-separated numbers" in result.output
    result = _run("-c", cfg_path, "-m", ckpt, "--scales", "0")
    assert result.exit_code == 2 and "positive" in result.output
    if not torch.cuda.is_available():
        _one_line_error(_run("-c", cfg_path, "-m", ckpt, "--cuda"), "CUDA is not available")
