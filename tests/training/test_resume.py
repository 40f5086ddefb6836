"""What --resume checks (libs/training/resume.py, run_folder.py): the checkpoint's config
against the current one, iterations left, TensorBoard steps purged, the torch thread count."""

import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tests.tiny_model import narrow

import train
from libs.training.loop import train as run_training
from libs.training.resume import check_resume, config_changes, refused_changes
from libs.utils.errors import CheckpointError
from libs.utils.atomic import save_torch

CPU = torch.device("cpu")


def first_run(toy_cfg, tmp_path):
    """Four iterations with checkpoints at 2 and 4 (and final), and the config on disk."""
    cfg = narrow(toy_cfg, ITER_MAX=4, ITER_SNAP=2, ITER_TB=2)
    run_training(cfg, CPU, progress=False)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return cfg, path, Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID


def invoke(config, *args):
    return CliRunner().invoke(train.main, ["--config", str(config), "--no-cuda", "--no-eval",
                                           *args])


def snapshot_files(*folders):
    return {p: p.read_bytes() for folder in folders for p in Path(folder).rglob("*")
            if p.is_file()}


def test_a_changed_config_is_listed_and_refused(toy_cfg, tmp_path, one_torch_thread):
    cfg, config, out = first_run(toy_cfg, tmp_path)
    before = snapshot_files(cfg.EXP.OUTPUT_DIR, cfg.EXP.LOG_DIR)
    result = invoke(config, "--resume", str(out / "checkpoint_2.pth"), "--set", "SOLVER.LR=0.01",
                    "--set", "EXP.SEED=3", "--set", "MODEL.BACKBONE.BASE_WIDTH=16")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {out / 'checkpoint_2.pth'}: the config differs from the checkpoint's: "
        "EXP.SEED: 0 -> 3; MODEL.BACKBONE.BASE_WIDTH: 8 -> 16; SOLVER.LR: 0.00025 -> 0.01 (resume with "
        "the checkpoint's values, or allow a deliberate change with --allow-config-change KEY)")
    assert snapshot_files(cfg.EXP.OUTPUT_DIR, cfg.EXP.LOG_DIR) == before

    # Logging and output settings may change; a longer ITER_MAX is always allowed.
    result = invoke(config, "--resume", str(out / "checkpoint_2.pth"),
                    "--set", "SOLVER.ITER_TB=1", "--set", "SOLVER.ITER_MAX=5")
    assert result.exit_code == 0, result.output
    assert "Config change on resume: SOLVER.ITER_MAX: 4 -> 5" in result.output
    assert torch.load(out / "checkpoint_final.pth", weights_only=True)["iteration"] == 5


def test_the_allow_flag_lets_a_deliberate_change_through(toy_cfg, tmp_path, one_torch_thread):
    cfg, config, out = first_run(toy_cfg, tmp_path)
    result = invoke(config, "--resume", str(out / "checkpoint_2.pth"), "--set", "SOLVER.LR=0.01",
                    "--set", "SOLVER.MOMENTUM=0.5", "--allow-config-change", "SOLVER.LR")
    assert result.exit_code == 1
    assert "SOLVER.MOMENTUM: 0.9 -> 0.5 (" in result.output and "SOLVER.LR:" not in result.output
    result = invoke(config, "--resume", str(out / "checkpoint_2.pth"), "--set", "SOLVER.LR=0.01",
                    "--set", "SOLVER.MOMENTUM=0.5", "--allow-config-change", "SOLVER.LR",
                    "--allow-config-change", "SOLVER.MOMENTUM")
    assert result.exit_code == 0, result.output
    assert "Config change on resume: SOLVER.LR: 0.00025 -> 0.01" in result.output
    final = torch.load(out / "checkpoint_final.pth", weights_only=True)
    assert final["config"]["SOLVER"]["LR"] == 0.01  # the run now carries the new value


def test_resuming_at_or_past_iter_max_is_refused(toy_cfg, tmp_path, one_torch_thread):
    cfg, config, out = first_run(toy_cfg, tmp_path)
    before = snapshot_files(cfg.EXP.OUTPUT_DIR)
    for checkpoint, iter_max, held in [("checkpoint_final.pth", 4, 4),
                                       ("checkpoint_4.pth", 3, 4), ("checkpoint_2.pth", 2, 2)]:
        result = invoke(config, "--resume", str(out / checkpoint),
                        "--set", f"SOLVER.ITER_MAX={iter_max}",
                        "--allow-config-change", "SOLVER.ITER_MAX")
        assert result.exit_code == 1
        assert result.output.strip() == (
            f"Error: {out / checkpoint}: holds iteration {held}, and SOLVER.ITER_MAX is "
            f"{iter_max}: nothing left to train (raise SOLVER.ITER_MAX to go on)")
    assert snapshot_files(cfg.EXP.OUTPUT_DIR) == before


def test_a_resumed_run_purges_the_tensorboard_steps_after_its_checkpoint(
        toy_cfg, tmp_path, one_torch_thread):
    cfg, config, out = first_run(toy_cfg, tmp_path)
    # TensorBoard reads a run's event files in name order, and a name holds the second it was
    # opened and a per-process counter: two runs of one process within a second could sort
    # either way (".10" < ".9"), which separate train.py processes never do.
    time.sleep(max(0.0, 1.05 - time.time() % 1))
    result = invoke(config, "--resume", str(out / "checkpoint_2.pth"))
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID),
                              size_guidance={"scalars": 0})
    events.Reload()
    assert len(list((Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID).glob("events.out.tfevents.*"))) == 2
    for tag in ("loss/train", "lr/backbone"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4], tag


def test_another_thread_count_warns_that_the_run_is_not_bit_identical(
        toy_cfg, tmp_path, one_torch_thread):
    cfg, config, out = first_run(toy_cfg, tmp_path)
    state = torch.load(out / "checkpoint_2.pth", weights_only=True)
    assert state["num_threads"] == 1
    result = invoke(config, "--resume", str(out / "checkpoint_2.pth"))
    assert result.exit_code == 0 and "torch thread" not in result.output
    state["num_threads"] = 3  # as if written on a machine with 3 threads
    other = tmp_path / "three_threads.pth"
    save_torch(state, other)
    result = invoke(config, "--resume", str(other))
    assert result.exit_code == 0, result.output
    assert (f"Warning: {other} was trained with 3 torch thread(s), this run uses 1: it will "
            "not be bit-identical to an uninterrupted run (set OMP_NUM_THREADS=3 for that).") \
        in result.output


def test_config_comparison_rules(toy_cfg):
    saved = toy_cfg.to_dict()
    current = narrow(toy_cfg.deepcopy(), ITER_MAX=9, ITER_SNAP=1).to_dict()
    current["MODEL"]["INIT_MODEL"] = "other.pth"  # not used by a resumed run
    current["AUGMENTATION"]["FLIP"] = not saved["AUGMENTATION"]["FLIP"]
    changes = config_changes(saved, current)
    assert [key for key, _, _ in changes] == [
        "AUGMENTATION.FLIP", "MODEL.BACKBONE.BASE_WIDTH", "SOLVER.ITER_MAX"]
    assert [key for key, _, _ in refused_changes(changes, ())] == [
        "AUGMENTATION.FLIP", "MODEL.BACKBONE.BASE_WIDTH"]
    assert refused_changes(changes, ("AUGMENTATION", "MODEL.BACKBONE.BASE_WIDTH")) == []
    assert refused_changes(changes, ("ALL",)) == []
    shorter = config_changes(saved, dict(saved, SOLVER=dict(saved["SOLVER"], ITER_MAX=3)))
    assert refused_changes(shorter, ()) == [("SOLVER.ITER_MAX", 4, 3)]
    with pytest.raises(CheckpointError, match="holds iteration 4, and SOLVER.ITER_MAX is 4"):
        check_resume({"iteration": 4, "config": saved}, toy_cfg, "c.pth")
