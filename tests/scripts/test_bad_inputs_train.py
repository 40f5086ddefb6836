"""Bad or risky inputs to train.py: each is one line "Error: ...", exit status 1, and no file that
existed before changes (sha256 before/after); an existing run is never overwritten by accident."""

import hashlib
import os
import shutil
from pathlib import Path

import torch
import yaml
from click.testing import CliRunner
from tests.tiny_model import narrow

import train
from libs.models import build_model
from libs.utils.atomic import save_torch


def write(cfg, tmp_path, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def digests(*folders):
    """sha256 of every file below ``folders`` (missing folders hold nothing)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders if Path(folder).is_dir()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def invoke(config, *args):
    return CliRunner().invoke(train.main, ["--config", str(config), "--no-cuda", "--no-eval",
                                           *args])


def assert_one_error_line(result, expected, exact=True):
    """Exit 1 and a single "Error: " line (the last; the start summary may come before it)."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [lines[-1]] and "Traceback" not in result.output, result.output
    if exact:
        assert lines[-1] == f"Error: {expected}"
    else:
        assert lines[-1].startswith(f"Error: {expected}"), lines[-1]


def finished_run(toy_cfg, tmp_path):
    cfg = narrow(toy_cfg, ITER_MAX=2, ITER_SNAP=1, ITER_TB=1)
    config = write(cfg, tmp_path)
    assert invoke(config).exit_code == 0
    return cfg, config, Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID, Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID


def test_an_existing_run_is_refused_and_left_untouched(toy_cfg, tmp_path, one_torch_thread):
    cfg, config, out, logs = finished_run(toy_cfg, tmp_path)
    before = digests(out, logs)
    assert len(before) >= 5  # checkpoints 1, 2, final, events, train.log
    result = invoke(config)
    assert_one_error_line(
        result, f"{out}: EXP.ID 'toy' already holds a run (5 checkpoint/log file(s)); continue "
                "it with --resume PATH or --resume latest, or start anew with another EXP.ID "
                "(--set EXP.ID=...) or --overwrite (deletes them)")
    assert digests(out, logs) == before

    # logs alone (a run stopped before its first checkpoint) count too
    for path in out.iterdir():
        path.unlink()
    result = invoke(config)
    assert_one_error_line(result, f"{logs}: EXP.ID 'toy' already holds a run", exact=False)


def test_overwrite_deletes_the_old_run_first_and_keeps_other_files(toy_cfg, tmp_path,
                                                                   one_torch_thread):
    cfg, config, out, logs = finished_run(toy_cfg, tmp_path)
    (out / "notes.txt").write_text("mine")
    old_events = sorted(logs.glob("events.out.tfevents.*"))
    result = invoke(config, "--overwrite", "--set", "SOLVER.ITER_SNAP=2")
    assert result.exit_code == 0, result.output
    assert "--overwrite: deleted 5 file(s) of the earlier run 'toy'" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint_2.pth", "checkpoint_final.pth", "notes.txt"]
    assert not any(p.exists() for p in old_events)
    assert (logs / "train.log").read_text().count("Training summary") == 1


def test_resume_of_missing_corrupt_truncated_or_plain_files(toy_cfg, tmp_path, one_torch_thread):
    cfg, config, out, logs = finished_run(toy_cfg, tmp_path)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 100)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((out / "checkpoint_1.pth").read_bytes()[:3000])
    plain = tmp_path / "plain.pth"
    save_torch(build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).state_dict(), plain)
    before = digests(tmp_path)
    cases = [
        (tmp_path / "missing.pth", f"{tmp_path / 'missing.pth'}: weight file not found", True),
        (corrupt, f"{corrupt}: not a readable PyTorch weight file", False),
        (truncated, f"{truncated}: not a readable PyTorch weight file", False),
        (plain, f"{plain}: not a training checkpoint (no optimizer/iteration)", True),
    ]
    for path, expected, exact in cases:
        assert_one_error_line(invoke(config, "--resume", str(path)), expected, exact)
    assert digests(tmp_path) == before


def test_resume_latest_without_checkpoints_and_resume_with_overwrite(toy_cfg, tmp_path):
    cfg = narrow(toy_cfg)
    config = write(cfg, tmp_path)
    out = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    assert_one_error_line(invoke(config, "--resume", "latest"),
                          f"{out}: no checkpoint_<iteration>.pth to resume (--resume latest); "
                          "start a new run without --resume")
    assert_one_error_line(invoke(config, "--resume", "latest", "--overwrite"),
                          "--overwrite starts a new run and --resume continues one; "
                          "give one of them")
    assert not Path(cfg.EXP.OUTPUT_DIR).exists() and not Path(cfg.EXP.LOG_DIR).exists()


def test_unwritable_output_or_log_folder_fails_before_the_first_iteration(toy_cfg, tmp_path):
    cfg = narrow(toy_cfg)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg.EXP.OUTPUT_DIR = str(blocker)
    result = invoke(write(cfg, tmp_path))
    assert_one_error_line(result, f"{blocker / 'toy'}: cannot write checkpoints there "
                                  "(Not a directory)")
    assert "Training summary" not in result.output and not Path(cfg.EXP.LOG_DIR).exists()

    cfg.EXP.OUTPUT_DIR, cfg.EXP.LOG_DIR = str(tmp_path / "models"), str(blocker)
    result = invoke(write(cfg, tmp_path))
    assert_one_error_line(result, f"{blocker / 'toy'}: cannot write TensorBoard logs there "
                                  "(Not a directory)")
    assert "Training summary" not in result.output
    assert not list((tmp_path / "models").rglob("*.pth"))
    assert blocker.read_text() == "not a folder"


def test_a_corrupt_image_read_by_a_loader_worker_is_one_line(toy_cfg, tmp_path):
    root = Path(shutil.copytree(toy_cfg.DATASET.ROOT, tmp_path / "data"))
    train_ids = (root / "imageLists" / "train.txt").read_text().split()
    for name in train_ids:  # whichever image the first batch draws
        (root / "images" / f"{name}.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    cfg = narrow(toy_cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATALOADER.NUM_WORKERS = 2
    before = digests(root)
    result = invoke(write(cfg, tmp_path))
    assert_one_error_line(result, f"{root / 'images'}/", exact=False)
    assert ": corrupt image (" in result.output.strip().splitlines()[-1]
    assert "Training summary" in result.output  # it failed in the loop, in a worker
    assert "DataLoader worker" not in result.output
    assert digests(root) == before
    assert not list(Path(cfg.EXP.OUTPUT_DIR).rglob("*.pth"))


def test_unknown_model_name(toy_cfg, tmp_path):
    cfg = narrow(toy_cfg)
    cfg.MODEL.NAME = "DeepLabV9"
    config = write(cfg, tmp_path)
    assert_one_error_line(invoke(config), f"{config}: unknown MODEL.NAME 'DeepLabV9'",
                          exact=False)
    assert not list(Path(cfg.EXP.OUTPUT_DIR).rglob("*.pth"))


def test_stale_temporaries_of_a_killed_save_are_removed_at_start(toy_cfg, tmp_path,
                                                                 one_torch_thread):
    cfg, config, out, logs = finished_run(toy_cfg, tmp_path)
    stale = out / ".checkpoint_3.abcd1234.tmp.pth"
    stale.write_bytes(b"half a checkpoint")
    other = out / ".keep.tmp.pth"  # not this program's pattern
    other.write_bytes(b"")
    for path in (stale, other):  # written before this process started, as by a killed one
        os.utime(path, (path.stat().st_mtime - 3600,) * 2)
    result = invoke(config, "--resume", "latest", "--set", "SOLVER.ITER_MAX=3")
    assert result.exit_code == 0, result.output
    assert "Removed 1 temporary file(s) left in" in result.output
    assert not stale.exists() and other.exists()
    assert torch.load(out / "checkpoint_final.pth", weights_only=True)["iteration"] == 3
