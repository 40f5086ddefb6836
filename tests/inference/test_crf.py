import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from libs.datasets import build_dataset, to_rgb_uint8
from libs.inference.crf import DenseCRF, legacy_crf_image, map_crf
from libs.inference.metric import confusion_matrix
from libs.models import build_model
from libs.utils.config import load_config
from benchmarks.bench_crf import crf_predict, realistic_sample

eval_script = importlib.import_module("eval")  # the script; "eval" would shadow the builtin

ROOT = Path(__file__).resolve().parents[2]
PARAMS = dict(iter_max=10, pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67, bi_rgb_std=3)


def _random_inputs(rng, n_labels=5, height=24, width=32):
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    prob = rng.random((n_labels, height, width)).astype(np.float32) ** 3
    prob /= prob.sum(axis=0, keepdims=True)
    return image, prob


def _edge_scene(boundary):
    """Red left half, blue right half; a blurred unary whose boundary sits at ``boundary``."""
    height, width = 40, 60
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (200, 30, 30)
    image[:, width // 2:] = (30, 30, 200)
    x = np.broadcast_to(np.arange(width, dtype=np.float32), (height, width))
    left = 1.0 / (1.0 + np.exp((x - boundary) / 3.0))
    return image, np.stack([left, 1.0 - left]).astype(np.float32)


def test_posterior_is_a_distribution_of_the_right_shape():
    image, prob = _random_inputs(np.random.default_rng(0))
    posterior = DenseCRF(**PARAMS)(image, prob)
    assert posterior.shape == prob.shape and posterior.dtype == np.float32
    assert (posterior >= 0).all()
    np.testing.assert_allclose(posterior.sum(axis=0), 1.0, atol=1e-5)
    assert not np.allclose(posterior, prob, atol=1e-3)  # inference did something


@pytest.mark.parametrize("unary_boundary", [23.5, 36.5])
def test_label_boundary_moves_onto_the_colour_edge(unary_boundary):
    image, prob = _edge_scene(unary_boundary)
    before = prob.argmax(axis=0)
    after = DenseCRF(**PARAMS)(image, prob).argmax(axis=0)
    edge = image.shape[1] // 2
    assert (before[:, :edge] == 0).mean() < 0.9 or (before[:, edge:] == 1).mean() < 0.9
    assert (after[:, :edge] == 0).all() and (after[:, edge:] == 1).all()


def test_parallel_map_equals_serial_calls():
    rng = np.random.default_rng(1)
    items = [(f"img{i}",) + _random_inputs(rng, n_labels=4 + i) for i in range(4)]
    crf = DenseCRF(**PARAMS)
    direct = [crf(image, prob) for _, image, prob in items]
    serial = list(map_crf(crf, items, n_jobs=1))
    parallel = list(map_crf(crf, iter(items), n_jobs=2))
    parallel_labels = list(map_crf(crf, items, n_jobs=2, argmax=True))
    assert [k for k, _ in parallel] == [k for k, _ in serial] == ["img0", "img1", "img2", "img3"]
    for want, (_, got_serial), (_, got_parallel), (_, labels) in zip(
            direct, serial, parallel, parallel_labels):
        np.testing.assert_array_equal(got_serial, want)
        np.testing.assert_array_equal(got_parallel, want)
        np.testing.assert_array_equal(labels, want.argmax(axis=0))


def test_pruned_crf_agrees_with_full_crf_on_realistic_maps():
    """Bar: >= 99.9% of pixels get the same label as the full 182-label CRF."""
    rng = np.random.default_rng(7)
    full = DenseCRF(**PARAMS)
    pruned = DenseCRF(**PARAMS, prune_threshold=0.05)
    same = total = 0
    for _ in range(3):
        image, prob, _ = realistic_sample(rng, n_classes=182, size=97)
        kept = pruned.kept_labels(prob)
        assert len(kept) < 40  # pruning actually removes most of the 182 labels
        posterior = pruned(image, prob)
        dropped = np.setdiff1d(np.arange(182), kept)
        assert (posterior[dropped] == 0).all()
        np.testing.assert_allclose(posterior.sum(axis=0), 1.0, atol=1e-5)
        reference = full(image, prob).argmax(axis=0)
        np.testing.assert_array_equal(crf_predict(pruned, image, prob), posterior.argmax(axis=0))
        same += int((posterior.argmax(axis=0) == reference).sum())
        total += reference.size
    assert same / total >= 0.999


def test_flat_distribution_keeps_every_pixel_winner():
    rng = np.random.default_rng(4)
    image, _ = _random_inputs(rng, n_labels=3)
    prob = np.full((50,) + image.shape[:2], 1.0 / 50, dtype=np.float32)
    prob[7, :, :16] += 0.001
    prob[9, :, 16:] += 0.001
    prob /= prob.sum(axis=0, keepdims=True)
    crf = DenseCRF(**PARAMS, prune_threshold=0.05)
    np.testing.assert_array_equal(crf.kept_labels(prob), [7, 9])
    spiked = prob.copy()
    spiked[3, 5, 20] = 0.2  # above the threshold at one pixel: kept too
    np.testing.assert_array_equal(crf.kept_labels(spiked), [3, 7, 9])
    posterior = crf(image, prob)
    np.testing.assert_allclose(posterior.sum(axis=0), 1.0, atol=1e-5)
    assert set(np.unique(posterior.argmax(axis=0))) <= {7, 9}


def test_pruning_to_one_label_gives_certainty():
    image, prob = _random_inputs(np.random.default_rng(2), n_labels=3)
    prob[:] = 0.0
    prob[1] = 1.0
    posterior = DenseCRF(**PARAMS, prune_threshold=0.5)(image, prob)
    np.testing.assert_array_equal(posterior[1], 1.0)
    np.testing.assert_array_equal(posterior[[0, 2]], 0.0)


def test_bad_inputs_are_clear_errors():
    image, prob = _random_inputs(np.random.default_rng(3))
    crf = DenseCRF(**PARAMS)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        crf(image.astype(np.float32), prob)
    with pytest.raises(ValueError, match="CxHxW with HxW"):
        crf(image, prob[:, :10])
    with pytest.raises(ValueError, match="prune_threshold"):
        DenseCRF(**PARAMS, prune_threshold=1.5)
    with pytest.raises(ValueError, match="n_jobs"):
        list(map_crf(crf, [("a", image, prob)], n_jobs=0))


def test_from_config_reads_the_crf_section():
    cfg = load_config(ROOT / "config" / "cocostuff.yaml")
    crf = DenseCRF.from_config(cfg.CRF)
    assert (crf.iter_max, crf.pos_w, crf.pos_xy_std) == (10, 3.0, 1.0)
    assert (crf.bi_w, crf.bi_xy_std, crf.bi_rgb_std) == (4.0, 67.0, 3.0)
    assert crf.prune_threshold == cfg.CRF.PRUNE_THRESHOLD
    full = crf.with_prune_threshold(None)
    assert full.prune_threshold is None and crf.prune_threshold == cfg.CRF.PRUNE_THRESHOLD
    assert full.settings() == {"iter_max": 10, "pos_w": 3.0, "pos_xy_std": 1.0, "bi_w": 4.0,
                               "bi_xy_std": 67.0, "bi_rgb_std": 3.0, "prune_threshold": None,
                               "backend": "pydensecrf"}  # CRF.BACKEND auto, on the CPU
    assert list(full.settings()) == list(PARAMS) + ["prune_threshold", "backend"]
    assert DenseCRF.from_config(cfg.CRF, "cuda").backend == "torch"
    assert DenseCRF.from_config(cfg.CRF, "cuda", "pydensecrf").backend == "pydensecrf"
    assert DenseCRF.from_config(cfg.CRF, "cpu", "torch").backend == "torch"
    with pytest.raises(ValueError, match="prune_threshold"):
        crf.with_prune_threshold(1.0)


def test_parameters_are_fixed_and_typed_once_built():
    crf = DenseCRF(**PARAMS, prune_threshold=0.05)
    assert isinstance(crf.iter_max, int) and isinstance(crf.pos_w, float)
    assert repr(crf) == ("DenseCRF(iter_max=10, pos_w=3.0, pos_xy_std=1.0, bi_w=4.0, "
                         "bi_xy_std=67.0, bi_rgb_std=3.0, prune_threshold=0.05, backend='pydensecrf')")
    with pytest.raises(AttributeError):
        crf.prune_threshold = 0.1


def test_legacy_image_wraps_the_mean_subtracted_input_like_the_original():
    chw = np.array([[[-5.7, 130.2]], [[0.0, 255.9]], [[-104.0, 300.0]]], dtype=np.float32)
    hwc = legacy_crf_image(chw)
    assert hwc.shape == (1, 2, 3) and hwc.dtype == np.uint8
    np.testing.assert_array_equal(hwc[0, 0], [251, 0, 152])
    np.testing.assert_array_equal(hwc[0, 1], [130, 255, 44])


# ------------------------------------------------ eval.py --crf-prune (one run's threshold)

CONFIG_THRESHOLD = 0.05  # the config's CRF.PRUNE_THRESHOLD in these runs
FORCED_THRESHOLD = 0.6   # prunes every label that wins no pixel of these images


@pytest.fixture
def crf_eval_setup(toy_cfg, tmp_path):
    """A config with pruning at CONFIG_THRESHOLD, a random tiny model's checkpoint, and the
    confusion matrix of the first two test images under the exact CRF and under pruning
    at FORCED_THRESHOLD, computed by hand (corner-aligned upsampling, softmax, CRF)."""
    toy_cfg.CRF.PRUNE_THRESHOLD = CONFIG_THRESHOLD
    cfg_path = tmp_path / "toy.yaml"
    cfg_path.write_text(yaml.safe_dump(toy_cfg.to_dict()))
    torch.manual_seed(0)
    model = build_model(toy_cfg.MODEL, toy_cfg.DATASET.N_CLASSES).eval()
    for name, param in model.named_parameters():
        if ".aspp." in name:  # spread the logits so that several labels compete
            torch.nn.init.normal_(param, std=0.5)
    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    exact = DenseCRF.from_config(toy_cfg.CRF).with_prune_threshold(None)
    crfs = {None: exact, FORCED_THRESHOLD: exact.with_prune_threshold(FORCED_THRESHOLD)}
    n_classes = toy_cfg.DATASET.N_CLASSES
    expected = {key: np.zeros((n_classes, n_classes), np.int64) for key in crfs}
    dataset = build_dataset(toy_cfg, "test", augment=False)
    with torch.no_grad():
        for index in range(2):
            _, image, label = dataset[index]
            logits = F.interpolate(model(image[None]), size=label.shape, mode="bilinear",
                                   align_corners=True)
            prob = F.softmax(logits, dim=1)[0].numpy()
            rgb = to_rgb_uint8(image, toy_cfg.IMAGE.MEAN)
            # The forced threshold leaves labels out, so the pruned path is what runs.
            assert len(crfs[FORCED_THRESHOLD].kept_labels(prob)) < n_classes
            for key, crf in crfs.items():
                expected[key] += confusion_matrix(label.numpy(), crf(rgb, prob).argmax(0), n_classes)
    return cfg_path, ckpt, expected


def _eval(tmp_path, monkeypatch, name, *args):
    """Run eval.py on two images; return its results JSON and the thresholds of the CRFs that ran."""
    ran = []
    kept_labels = DenseCRF.kept_labels

    def spy(crf, probmap):  # with one worker every CRF call happens in this process
        ran.append(crf.prune_threshold)
        return kept_labels(crf, probmap)

    monkeypatch.setattr(DenseCRF, "kept_labels", spy)
    out = tmp_path / f"{name}.json"
    result = CliRunner().invoke(eval_script.main, [str(a) for a in args] + [
        "-o", str(out), "--limit", "2", "--n-jobs", "1", "--no-cuda"])
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), ran


def test_eval_crf_prune_sets_the_threshold_of_one_run(crf_eval_setup, tmp_path, monkeypatch):
    cfg_path, ckpt, expected = crf_eval_setup
    common = ("-c", cfg_path, "-m", ckpt, "--crf")
    forced, ran = _eval(tmp_path, monkeypatch, "forced", *common, "--crf-prune", FORCED_THRESHOLD)
    assert ran == [FORCED_THRESHOLD] * 2
    assert forced["crf"]["prune_threshold"] == FORCED_THRESHOLD
    np.testing.assert_array_equal(forced["confusion_matrix"], expected[FORCED_THRESHOLD])
    for word in ("none", "Exact"):
        exact, ran = _eval(tmp_path, monkeypatch, word, *common, "--crf-prune", word)
        assert ran == [None] * 2 and exact["crf"]["prune_threshold"] is None
        np.testing.assert_array_equal(exact["confusion_matrix"], expected[None])
    from_config, ran = _eval(tmp_path, monkeypatch, "config", *common)
    assert ran == [CONFIG_THRESHOLD] * 2
    assert from_config["crf"]["prune_threshold"] == CONFIG_THRESHOLD
    assert load_config(cfg_path).CRF.PRUNE_THRESHOLD == CONFIG_THRESHOLD  # file untouched


@pytest.mark.parametrize("args, message", [
    (["--crf", "--crf-prune", "1.0"], "[0, 1) or none"),
    (["--crf", "--crf-prune", "-0.1"], "[0, 1) or none"),
    (["--crf", "--crf-prune", "nan"], "[0, 1) or none"),
    (["--crf", "--crf-prune", "few"], "'few'"),
    (["--crf-prune", "0.1"], "add --crf"),
])
def test_eval_crf_prune_rejects_bad_values_before_any_work(args, message, tmp_path):
    # No config or model exists: the option is refused before either is read.
    result = CliRunner().invoke(eval_script.main, [
        "-c", str(tmp_path / "missing.yaml"), "-m", str(tmp_path / "missing.pth")] + args)
    assert result.exit_code == 2, result.output
    assert message in result.output
