"""Bad and unusual inputs to every script: one line, exit status 1, and nothing existing changed.

Each case runs a script in-process (click's CliRunner) on a tiny model and the
shared synthetic dataset, and asserts three things: the exit status, the
message (stderr is exactly one non-empty line, "Error: " then the file or key
and the problem; no traceback, no "Caught ... in DataLoader worker"), and that
no file under the test's folder was created, changed or removed (sha256 of
every file before and after).
"""

import errno
import hashlib
import importlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from click.testing import CliRunner
from tests.tiny_model import tiny_setup

import convert
import demo
import draw_model
import export as export_script
from tests.caffe_reference import deeplab_caffe_layers, write_caffemodel
from libs.datasets.synthetic import Sizes, generate_synthetic
from libs.inference import evaluation
from libs.utils import atomic
from libs.utils.config import load_config

eval_script = importlib.import_module("eval")  # "eval" would shadow the builtin

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- helpers -------------------------------------------------------------------------------

def snapshot(folder):
    """``{relative path: sha256}`` of every file below ``folder``."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(script, *args):
    return CliRunner().invoke(script.main, [str(a) for a in args])


def assert_one_line(result, *fragments, start=None):
    """Exit status 1 and stderr a single "Error: ..." line holding every fragment."""
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    line = lines[0]
    assert line.startswith("Error: " + (start or "")), line
    for fragment in fragments:
        assert str(fragment) in line, (fragment, line)
    assert "Traceback" not in result.output and "Caught" not in result.output
    return line


@pytest.fixture
def world(toy_cfg, tmp_path, monkeypatch):
    """A tiny config, its checkpoint, a private copy of the synthetic data, all in tmp_path."""
    # eval's progress bar shares stderr with the error line; this test reads that line alone.
    bar = evaluation.tqdm

    def quiet_bar(*args, **kwargs):
        return bar(*args, **{**kwargs, "disable": True})

    quiet_bar.write = bar.write  # the score table is still printed through tqdm.write
    monkeypatch.setattr(evaluation, "tqdm", quiet_bar)
    data = tmp_path / "data"
    shutil.copytree(toy_cfg.DATASET.ROOT, data)
    toy_cfg.DATASET.ROOT = str(data)
    toy_cfg.DATASET.SYNTHETIC = None
    toy_cfg.EXP.LOG_DIR = str(tmp_path / "runs")
    config, checkpoint = tiny_setup(toy_cfg, tmp_path / "models")
    return {"root": tmp_path, "cfg": toy_cfg, "config": config, "model": checkpoint,
            "data": data, "image": sorted((data / "images").glob("*.jpg"))[0]}


# Runs whose DataLoader workers failed. The error's traceback holds the loader's iterator;
# freed later in this process, torch waits 5 s per worker to join it (at interpreter exit it
# does not wait), so such results are kept until the end of the session.
FAILED_WORKER_RUNS = []


def run_unchanged(world, script, *args):
    """Run ``script``; assert that no file under the test's folder changed; return the result."""
    before = snapshot(world["root"])
    result = invoke(script, *args)
    assert snapshot(world["root"]) == before
    if any("NUM_WORKERS=" in str(a) and not str(a).endswith("=0") for a in args):
        FAILED_WORKER_RUNS.append(result)
    return result


def eval_args(world, *extra):
    return ("-c", world["config"], "-m", world["model"], "--no-cuda", *extra)


def split_ids(world):
    """The ids of the test split of the fixture's data copy, in the order they are read."""
    return (world["data"] / "imageLists" / "test.txt").read_text().split()


# -- config values through eval.py (--set is checked like the file) --------------------------

POSITIVE = "expected a positive integer"
CONFIG_CASES = [
    ("SOLVER.ITER_SNAP=0", "key SOLVER.ITER_SNAP: " + POSITIVE + ", got 0"),
    ("SOLVER.ITER_TB=0", "key SOLVER.ITER_TB: " + POSITIVE + ", got 0"),
    ("SOLVER.LR_DECAY=0", "key SOLVER.LR_DECAY: " + POSITIVE + ", got 0"),
    ("SOLVER.LR_DECAY=-10", "key SOLVER.LR_DECAY: " + POSITIVE + ", got -10"),
    ("SOLVER.BATCH_SIZE.TRAIN=0", "key SOLVER.BATCH_SIZE.TRAIN: " + POSITIVE + ", got 0"),
    ("SOLVER.BATCH_SIZE.TEST=-1", "key SOLVER.BATCH_SIZE.TEST: " + POSITIVE + ", got -1"),
    ("SOLVER.ITER_SIZE=0", "key SOLVER.ITER_SIZE: " + POSITIVE + ", got 0"),
    ("SOLVER.ITER_MAX=0", "key SOLVER.ITER_MAX: " + POSITIVE + ", got 0"),
    ("SOLVER.ITER_MAX=-5", "key SOLVER.ITER_MAX: " + POSITIVE + ", got -5"),
    ("SOLVER.ITER_EVAL=0", "key SOLVER.ITER_EVAL: " + POSITIVE + ", got 0"),
    ("SOLVER.AVERAGE_LOSS=0", "key SOLVER.AVERAGE_LOSS: " + POSITIVE + ", got 0"),
    ("DATALOADER.NUM_WORKERS=-1", "key DATALOADER.NUM_WORKERS: expected an integer >= 0, got -1"),
    ("SOLVER.LR=0", "key SOLVER.LR: expected a positive number, got 0.0"),
    ("SOLVER.LR=-1e-3", "key SOLVER.LR: expected a positive number, got -0.001"),
    ("SOLVER.LR=.inf", "key SOLVER.LR: expected a positive number, got inf"),
    ("SOLVER.MOMENTUM=1.0", "key SOLVER.MOMENTUM: expected a number in [0, 1), got 1.0"),
    ("SOLVER.WEIGHT_DECAY=-5e-4", "key SOLVER.WEIGHT_DECAY: expected a number >= 0, got -0.0005"),
    ("SOLVER.POLY_POWER=.nan", "key SOLVER.POLY_POWER: expected a number >= 0, got nan"),
    ("MODEL.MSC.SCALES=[0.0]", "key MODEL.MSC.SCALES[0]: expected a scale in (0, 1], got 0.0"),
    ("MODEL.MSC.SCALES=[0.5, 1.5]", "key MODEL.MSC.SCALES[1]: expected a scale in (0, 1], got 1.5"),
    ("DATASET.IGNORE_LABEL=3", "key DATASET.IGNORE_LABEL: expected a value outside the classes "
                               "0..7 (DATASET.N_CLASSES: 8), got 3"),
    ("DATASET.N_CLASSES=0", "key DATASET.N_CLASSES: " + POSITIVE + ", got 0"),
    ("IMAGE.SIZE.TEST=0", "key IMAGE.SIZE.TEST: " + POSITIVE + ", got 0"),
    ("EXP.SEED=-1", "key EXP.SEED: expected an integer >= 0, got -1"),
    ("EXP.ID=''", "key EXP.ID: expected a non-empty string, got ''"),
    ("CRF.BI_RGB_STD=0", "key CRF.BI_RGB_STD: expected a positive number, got 0.0"),
    ("CRF.ITER_MAX=0", "key CRF.ITER_MAX: " + POSITIVE + ", got 0"),
    ("CRF.PRUNE_THRESHOLD=1.0", "key CRF.PRUNE_THRESHOLD: expected a number in [0, 1) or null, "
                                "got 1.0"),
]


@pytest.mark.parametrize("override, message", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_out_of_range_config_values_are_one_line(world, override, message):
    result = run_unchanged(world, eval_script, *eval_args(world, "--set", override))
    assert_one_line(result, message, start=f"{world['config']}: ")


V3_CASES = [  # keys only v3 and v3+ take (config/toy_deeplabv3.yaml)
    ("MODEL.OUTPUT_STRIDE=32", "key MODEL.OUTPUT_STRIDE: expected 8 or 16, got 32"),
    ("MODEL.MULTI_GRID=[1, 0, 4]", "key MODEL.MULTI_GRID[1]: " + POSITIVE + ", got 0"),
    ("MODEL.HEAD_CHANNELS=0", "key MODEL.HEAD_CHANNELS: " + POSITIVE + ", got 0"),
]


@pytest.mark.parametrize("override, message", V3_CASES, ids=[c[0] for c in V3_CASES])
def test_out_of_range_v3_values_are_one_line(world, override, message):
    config = world["root"] / "v3.yaml"
    config.write_text(f"_BASE_: {world['config']}\nMODEL:\n  NAME: DeepLabV3_ResNet101\n"
                      "  OUTPUT_STRIDE: 16\n  MULTI_GRID: [1, 2, 4]\n  HEAD_CHANNELS: 16\n"
                      "  HEAD_BN: train\n")
    result = run_unchanged(world, eval_script, "-c", config, "-m", world["model"], "--no-cuda",
                           "--set", override)
    assert_one_line(result, message, start=f"{config}: ")


@pytest.mark.parametrize("script", ["demo", "export", "draw_model", "convert"])
def test_every_script_checks_the_config_ranges(world, caffemodel, script):
    bad = world["root"] / "bad.yaml"
    bad.write_text(f"_BASE_: {world['config']}\nSOLVER:\n  ITER_SNAP: 0\n")
    args = {
        "demo": (demo, "-c", bad, "-m", world["model"], "-i", world["image"], "--no-show",
                 "-o", world["root"] / "figure.png"),
        "export": (export_script, "-c", bad, "-m", world["model"]),
        "draw_model": (draw_model, "-c", bad),
        "convert": (convert, "--dataset", "voc12", "--config", bad, "--caffemodel", caffemodel,
                    "--output", world["root"] / "converted.pth"),
    }[script]
    result = run_unchanged(world, *args)
    assert_one_line(result, f"key SOLVER.ITER_SNAP: {POSITIVE}, got 0", start=f"{bad}: ")


def test_scale_range_upside_down_is_one_line(world):
    result = run_unchanged(world, eval_script, *eval_args(
        world, "--set", "AUGMENTATION.SCALE_CHOICES=null", "--set",
        "AUGMENTATION.SCALE_RANGE=[1.5, 0.5]"))
    assert_one_line(result, "key AUGMENTATION.SCALE_RANGE: expected [min, max] with min <= max, "
                            "got [1.5, 0.5]", start=f"{world['config']}: ")


def test_unknown_model_name_in_eval_is_one_line(world):
    result = run_unchanged(world, eval_script, *eval_args(world, "--set", "MODEL.NAME=NoSuchNet"))
    assert_one_line(result, "unknown MODEL.NAME 'NoSuchNet'", start=f"{world['config']}: ")


@pytest.mark.parametrize("text, line, key", [
    ("SOLVER:\n  LR: 1e-3\n  ITER_MAX: 3\n  LR: 2e-3\n", 5, "SOLVER.LR"),
    ("SOLVER:\n  LR: 1e-3\nSOLVER:\n  ITER_MAX: 3\n", 4, "SOLVER"),
    ("SOLVER:\n  BATCH_SIZE:\n    TRAIN: 2\n    TRAIN: 4\n", 5, "SOLVER.BATCH_SIZE.TRAIN"),
])
def test_duplicate_keys_name_file_line_and_key(world, text, line, key):
    config = world["root"] / "dup.yaml"
    config.write_text(f"_BASE_: {world['config']}\n{text}")
    result = run_unchanged(world, eval_script, "-c", config, "-m", world["model"], "--no-cuda")
    assert_one_line(result, f"line {line}: duplicate key {key} (first given at line",
                    start=f"{config}: ")


def test_exponent_floats_are_numbers_and_an_empty_msc_list_is_single_scale(world):
    config = world["root"] / "ok.yaml"
    config.write_text(f"_BASE_: {world['config']}\nSOLVER:\n  LR: 1e-3\n  WEIGHT_DECAY: 1.0e-6\n"
                      "MODEL:\n  MSC:\n    SCALES: []\n")
    cfg = load_config(config, overrides=["SOLVER.MOMENTUM=9e-1"])
    assert (cfg.SOLVER.LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.MOMENTUM) == (1e-3, 1e-6, 0.9)
    assert cfg.MODEL.MSC.SCALES == []


def test_missing_and_invalid_config_files_are_one_line(world):
    missing = world["root"] / "nope.yaml"
    result = run_unchanged(world, eval_script, "-c", missing, "-m", world["model"], "--no-cuda")
    assert_one_line(result, "config file not found", start=f"{missing}: ")
    broken = world["root"] / "broken.yaml"
    broken.write_text("SOLVER: [unclosed\n")
    result = run_unchanged(world, eval_script, "-c", broken, "-m", world["model"], "--no-cuda")
    assert_one_line(result, "invalid YAML at line", start=f"{broken}: ")


# -- no script writes over one of its inputs -------------------------------------------------

def test_eval_output_over_the_model_is_refused(world):
    result = run_unchanged(world, eval_script, *eval_args(world, "-o", world["model"]))
    assert_one_line(result, "this is the input model file; choose another --output",
                    start=f"{world['model']}: ")


def test_eval_output_over_the_config_is_refused(world):
    result = run_unchanged(world, eval_script, *eval_args(world, "-o", world["config"]))
    assert_one_line(result, "this is the input config file", start=f"{world['config']}: ")


def demo_args(world, *extra):
    return ("-c", world["config"], "-m", world["model"], "-i", world["image"], "--no-cuda",
            "--no-show", *extra)


@pytest.mark.parametrize("option", ["--output", "--save-label"])
def test_demo_output_over_the_input_image_is_refused(world, option):
    target = world["root"] / "copy.png"
    cv2.imwrite(str(target), cv2.imread(str(world["image"])))
    args = ("-c", world["config"], "-m", world["model"], "-i", target, "--no-cuda", "--no-show",
            option, target)
    result = run_unchanged(world, demo, *args)
    assert_one_line(result, f"{option} would overwrite the input image", start=f"{target}: ")


@pytest.mark.parametrize("what", ["model", "config"])
def test_demo_output_over_the_model_or_config_is_refused(world, what):
    target = world[what].with_suffix(".png")
    os.link(world[what], target)  # the same file under a figure's name
    result = run_unchanged(world, demo, *demo_args(world, "-o", target))
    assert_one_line(result, f"this is the input {what} file", start=f"{target}: ")


def test_export_output_over_the_model_is_refused(world):
    result = run_unchanged(world, export_script, "-c", world["config"], "-m", world["model"],
                           "-o", world["model"], "--force")
    assert_one_line(result, "is the model's weight file", start=f"{world['model']}: ")


def test_export_output_over_the_config_is_refused(world):
    result = run_unchanged(world, export_script, "-c", world["config"], "-m", world["model"],
                           "-o", world["config"], "--force")
    assert_one_line(result, "this is the input config file", start=f"{world['config']}: ")


@pytest.fixture
def caffemodel(world):
    """A VOC-style caffemodel of the world's tiny network (8 classes, base width 8)."""
    layers = deeplab_caffe_layers(n_blocks=(1, 1, 1, 1), multiscale=False, base_width=8,
                                  n_classes=8)
    return write_caffemodel(layers, world["root"] / "tiny.caffemodel")


def test_convert_output_over_the_caffemodel_is_refused(world, caffemodel):
    result = run_unchanged(world, convert, "--dataset", "voc12", "--config", world["config"], "--caffemodel", caffemodel,
                           "--output", caffemodel)
    assert_one_line(result, "output would overwrite the input caffemodel", start=f"{caffemodel}: ")


def test_convert_output_over_a_link_to_the_caffemodel_is_refused(world, caffemodel):
    link = world["root"] / "linked.pth"
    os.link(caffemodel, link)
    result = run_unchanged(world, convert, "--dataset", "voc12", "--config", world["config"], "--caffemodel", caffemodel,
                           "--output", link)
    assert_one_line(result, "this is the input caffemodel", start=f"{link}: ")


# -- unwritable output locations, checked before the work -------------------------------------

@pytest.fixture
def blocked(world):
    """A regular file where an output folder is expected (mkdir: "Not a directory")."""
    path = world["root"] / "a_file"
    path.write_text("not a folder\n")
    return path


def test_eval_unwritable_results_folder(world, blocked):
    out = blocked / "results.json"
    result = run_unchanged(world, eval_script, *eval_args(world, "-o", out))
    assert_one_line(result, "cannot write (Not a directory)", start=f"{out}: ")


@pytest.mark.parametrize("option", ["--output", "--save-label"])
def test_demo_unwritable_output_folder(world, blocked, option):
    out = blocked / "out.png"
    result = run_unchanged(world, demo, *demo_args(world, option, out))
    assert_one_line(result, "cannot write (Not a directory)", start=f"{out}: ")


def test_export_unwritable_output_folder(world, blocked):
    out = blocked / "model.onnx"
    result = run_unchanged(world, export_script, "-c", world["config"], "-m", world["model"],
                           "-o", out)
    assert_one_line(result, "cannot write (Not a directory)", start=f"{out}: ")


def test_draw_model_unwritable_log_dir(world, blocked):
    result = run_unchanged(world, draw_model, "-c", world["config"], "--set",
                           f"EXP.LOG_DIR={blocked}")
    assert_one_line(result, "cannot write the TensorBoard graph there (Not a directory)",
                    start=f"{blocked / 'graph' / 'toy'}: ")


def test_convert_unwritable_output_folder(world, blocked, caffemodel):
    out = blocked / "x.pth"
    result = run_unchanged(world, convert, "--dataset", "voc12", "--config", world["config"], "--caffemodel", caffemodel,
                           "--output", out)
    assert_one_line(result, "cannot write (Not a directory)", start=f"{out}: ")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_eval_read_only_model_folder(world):
    folder = world["model"].parent
    folder.chmod(0o555)
    try:
        result = run_unchanged(world, eval_script, *eval_args(world))
    finally:
        folder.chmod(0o755)
    assert_one_line(result, "cannot write (Permission denied)", start=f"{folder}/")


# -- a disk that fills up during the write: one line, the old file untouched -----------------

def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_eval_full_disk_keeps_the_old_results(world, monkeypatch):
    out = world["root"] / "results.json"
    out.write_text('{"mean_iou": 0.5}\n')
    monkeypatch.setattr(atomic.os, "fsync", no_space)  # as a full disk reports at the flush
    result = run_unchanged(world, eval_script, *eval_args(world, "-o", out))
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and lines == [f"Error: {out}: cannot write "
                                               f"({os.strerror(errno.ENOSPC)})"]


def test_convert_full_disk_in_torch_save_keeps_the_old_file(world, caffemodel, monkeypatch):
    out = world["root"] / "converted.pth"
    out.write_bytes(b"the previous conversion")

    def unexpected_pos(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4416 vs 4310")

    monkeypatch.setattr(torch, "save", unexpected_pos)
    result = run_unchanged(world, convert, "--dataset", "voc12", "--config", world["config"], "--caffemodel", caffemodel,
                           "--output", out)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: {out}: cannot write (torch: ")
    assert "unexpected pos" in result.stderr and "Traceback" not in result.output
    assert not list(out.parent.glob(".converted.*"))  # the temporary file is gone too


def test_demo_full_disk_keeps_the_old_figure(world, monkeypatch):
    out = world["root"] / "figure.png"
    out.write_bytes(b"the previous figure")
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", no_space)
    result = run_unchanged(world, demo, *demo_args(world, "-o", out))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"Error: {out}: cannot write "
                                          f"({os.strerror(errno.ENOSPC)})"]


def test_draw_model_full_disk_is_one_line(world, monkeypatch):
    monkeypatch.setattr(draw_model, "write_graph", no_space)
    result = run_unchanged(world, draw_model, "-c", world["config"])
    log_dir = Path(world["cfg"].EXP.LOG_DIR) / "graph" / "toy"
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"Error: {log_dir}: cannot write "
                                          f"({os.strerror(errno.ENOSPC)})"]


# -- bad dataset files, read in the main process and in DataLoader workers ------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_names_the_file(world, workers):
    image = world["data"] / "images" / f"{split_ids(world)[1]}.jpg"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    result = run_unchanged(world, eval_script, *eval_args(
        world, "--set", f"DATALOADER.NUM_WORKERS={workers}"))
    assert_one_line(result, start=f"{image}: corrupt image (truncated JPEG: no end marker)")


def test_missing_image_names_the_file(world):
    image = world["data"] / "images" / f"{split_ids(world)[0]}.jpg"
    image.unlink()
    result = run_unchanged(world, eval_script, *eval_args(world))
    assert_one_line(result, start=f"{image}: image file not found")


def test_corrupt_annotation_in_a_worker_names_the_file(world):
    mat = world["data"] / "annotations" / f"{split_ids(world)[0]}.mat"
    mat.write_bytes(mat.read_bytes()[:150])
    result = run_unchanged(world, eval_script, *eval_args(
        world, "--set", "DATALOADER.NUM_WORKERS=1"))
    assert_one_line(result, start=f"{mat}: corrupt annotation")


@pytest.mark.parametrize("raw", [256, 9])
def test_raw_mat_value_outside_the_classes_is_quoted_as_in_the_file(world, raw):
    mat = world["data"] / "annotations" / f"{split_ids(world)[0]}.mat"
    s = scipy.io.loadmat(str(mat))["S"].astype(np.uint16)
    s[3, 4] = raw  # 256 would become 255, the ignore label, after the -1 shift
    scipy.io.savemat(mat, {"S": s})
    result = run_unchanged(world, eval_script, *eval_args(world))
    assert_one_line(result, f"label {raw} outside 1..8 (DATASET.N_CLASSES=8, class c stored as "
                            "c+1; unlabeled: 0)", start=f"{mat}: ")


def test_folder_label_outside_the_classes_names_the_file(world, tmp_path):
    root = generate_synthetic(tmp_path / "folder", Sizes(n_train=1, n_test=1, height=16, width=16),
                              seed=0, layout="folder")
    label_path = root / "labels" / f"{(root / 'lists' / 'val.txt').read_text().split()[0]}.png"
    label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 200
    cv2.imwrite(str(label_path), label)
    result = run_unchanged(world, eval_script, *eval_args(
        world, "--split", "val", "--set", "DATASET.NAME=folder", "--set", f"DATASET.ROOT={root}"))
    assert_one_line(result, "label 200 outside 0..7 (DATASET.N_CLASSES=8; unlabeled: 255)",
                    start=f"{label_path}: ")


# -- bad weight files --------------------------------------------------------------------------

def damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "garbage": b"not a zip file at all" * 10}[how])


@pytest.mark.parametrize("script", ["eval", "demo", "export"])
@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_damaged_weight_file_is_one_line(world, script, how):
    damage(world["model"], how)
    args = {"eval": (eval_script, *eval_args(world)), "demo": (demo, *demo_args(world)),
            "export": (export_script, "-c", world["config"], "-m", world["model"],
                       "-o", world["root"] / "m.onnx")}[script]
    result = run_unchanged(world, *args)
    assert_one_line(result, "not a readable PyTorch weight file", start=f"{world['model']}: ")


def test_missing_weight_file_creates_no_folder(world):
    missing = world["root"] / "no" / "such" / "model.pth"
    result = run_unchanged(world, eval_script, "-c", world["config"], "-m", missing, "--no-cuda")
    assert_one_line(result, "weight file not found", start=f"{missing}: ")
    assert not (world["root"] / "no").exists()


# -- stale temporary files ---------------------------------------------------------------------

def test_eval_removes_only_its_own_stale_temporaries(world):
    folder = world["model"].parent
    stale = [folder / ".tiny_test.ab12cd34.tmp.json", folder / ".other.k3j_9x2a.tmp.json"]
    # A checkpoint's temporary beside the model is train's to clear: it may be in its fsync.
    kept = [folder / ".checkpoint_10.k3j_9x2a.tmp.pth", folder / ".tiny_test.ab12cd34.tmp.json.bak",
            folder / "notes.tmp.json", folder / ".hidden"]
    for path in stale + kept:
        path.write_text("x")
    fresh = folder / ".fresh.zz99zz99.tmp.json"
    for path in stale + kept:
        os.utime(path, (1e9, 1e9))  # 2001: older than this process
    fresh.write_text("being written by another run right now")
    result = invoke(eval_script, *eval_args(world))
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept + [fresh])


def test_stale_temporaries_of_every_writer_are_removed_and_nothing_else(tmp_path):
    old = 1e9  # 2001: older than this process
    stale_files = [".checkpoint_4.abcdefgh.tmp.pth", ".tiny.a_b1c2d3.tmp", ".figure.x.12345678.tmp.png"]
    kept_files = ["checkpoint_4.pth", ".checkpoint_4.abcdefg.tmp.pth", "x.abcdefgh.tmp.pth"]
    stale_dirs = [".synthetic.tmp-abc_1234", ".synthetic.old-zz99zz99"]
    kept_dirs = [".synthetic.tmp-abc_1234-mine", "synthetic"]
    for name in stale_files + kept_files:
        (tmp_path / name).write_text("x")
    for name in stale_dirs + kept_dirs:
        (tmp_path / name / "images").mkdir(parents=True)
    for path in tmp_path.rglob("*"):
        os.utime(path, (old, old))
    growing = tmp_path / ".synthetic.tmp-new12345"  # a generation still running elsewhere:
    (growing / "images").mkdir(parents=True)        # its folder is old, a file in it is new
    os.utime(growing, (old, old))
    (growing / "images" / "a.jpg").write_bytes(b"x")
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale_files + stale_dirs)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        kept_files + kept_dirs + [growing.name])
    assert atomic.remove_stale_temporaries(tmp_path / "missing") == []


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    import stat

    synced = []
    real_fsync = os.fsync

    def record(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    atomic.write_bytes(b"data", tmp_path / "a.bin")
    assert synced == [False, True]  # the file's data, then the folder's entry
    synced.clear()
    atomic.write_json({"a": 1}, tmp_path / "a.json")
    assert synced == [False, True]


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_damaged_caffemodel_is_one_line(world, caffemodel, how):
    damage(caffemodel, how)
    out = world["root"] / "converted.pth"
    result = run_unchanged(world, convert, "--dataset", "voc12", "--config", world["config"],
                           "--caffemodel", caffemodel, "--output", out)
    assert_one_line(result, start=f"{caffemodel}: ")
    assert not out.exists()


def test_torch_file_errors_outside_the_weight_loader_are_one_line_and_others_pass():
    import click

    from libs.cli import one_line_errors

    with pytest.raises(click.ClickException) as error:
        with one_line_errors():
            raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding "
                               "central directory\nException raised from ... (frames)")
    assert error.value.message == ("a weight file torch cannot read or write: PytorchStreamReader "
                                   "failed reading zip archive: failed finding central directory")
    with pytest.raises(RuntimeError, match="a bug"):  # a programming error keeps its traceback
        with one_line_errors():
            raise RuntimeError("a bug")
