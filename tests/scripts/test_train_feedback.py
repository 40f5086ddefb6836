"""What a training run tells its user: the start summary, train.log, and the final scores and
the config in TensorBoard (libs/training/runlog.py, train.py)."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tests.tiny_model import narrow

import train
from libs.models import build_model
from libs.training import record_scores
from libs.training.loop import progress_bar

SEPARATOR = re.compile(r"^===== launch \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d =+$")
LOSS_LINE = re.compile(r"^iter (\d+)/(\d+)  loss ([\d.]+)  moving average ([\d.]+)  lr (\S+)$")


def feedback_config(toy_cfg, tmp_path):
    cfg = narrow(toy_cfg, ITER_MAX=4, ITER_SNAP=100, ITER_TB=2, ITER_SIZE=2)
    cfg.SOLVER.BATCH_SIZE.TRAIN = 2
    path = tmp_path / "feedback.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return cfg, path


def events(cfg):
    accumulator = EventAccumulator(str(Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID),
                                   size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_summary_train_log_and_tensorboard(toy_cfg, tmp_path, one_torch_thread):
    cfg, config = feedback_config(toy_cfg, tmp_path)
    args = ["--config", str(config), "--no-cuda", "--set", "SOLVER.ITER_SNAP=2"]
    result = CliRunner().invoke(train.main, args)
    assert result.exit_code == 0, result.output
    out = result.output

    # One summary block with the run's facts.
    assert out.count("Training summary") == 1
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < total  # the frozen BatchNorm parameters are not trained
    checkpoints = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    runs = Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID
    summary = [
        "Training summary",
        f"  config:       {config}",
        "  overrides:    --set SOLVER.ITER_SNAP=2",
        "  device:       cpu; world size 1",
        "  data:         12 train samples (split 'train'), 4 test samples (split 'test')",
        f"  model:        DeepLabV2_ResNet101_MSC, {total:,} parameters ({trainable:,} trainable)",
        "  batch:        4 images per update = 2 (BATCH_SIZE.TRAIN) x 2 (ITER_SIZE) "
        "x 1 (world size)",
        "  iterations:   1..4",
        f"  checkpoints:  {checkpoints}",
        f"  TensorBoard:  {runs} (this summary and the losses: {runs / 'train.log'})",
    ]
    start = out.splitlines().index("Training summary")
    assert out.splitlines()[start:start + len(summary)] == summary
    # the --set override took effect: snapshots every 2 iterations
    assert (checkpoints / "checkpoint_2.pth").is_file()

    # train.log: separator, the same summary, the loss every ITER_TB iterations, the scores.
    log = (runs / "train.log").read_text().splitlines()
    assert SEPARATOR.match(log[0])
    assert log[1:1 + len(summary)] == summary
    loss_lines = [LOSS_LINE.match(line) for line in log if line.startswith("iter ")]
    assert [(m.group(1), m.group(2)) for m in loss_lines] == [("2", "4"), ("4", "4")]
    tb = events(cfg)
    raw = {e.step: e.value for e in tb.Scalars("loss/train")}
    average = {e.step: e.value for e in tb.Scalars("loss/train_moving_average")}
    lr = {e.step: e.value for e in tb.Scalars("lr/backbone")}
    for match in loss_lines:
        step = int(match.group(1))
        assert float(match.group(3)) == pytest.approx(raw[step], abs=6e-5)
        assert float(match.group(4)) == pytest.approx(average[step], abs=6e-5)
        assert float(match.group(5)) == pytest.approx(lr[step], rel=1e-5)
    results = json.loads((checkpoints / "checkpoint_final_test.json").read_text())
    scores_at = log.index("Final scores (split 'test', 4 images):")
    assert log[scores_at + 1:scores_at + 5] == [
        f"  {label:<24}{results[key] * 100:6.2f}%" for key, label in
        [("pixel_accuracy", "Pixel Accuracy"), ("mean_accuracy", "Mean Accuracy"),
         ("mean_iou", "Mean IoU"), ("frequency_weighted_iou", "Frequency Weighted IoU")]]
    assert log[-1] == log[scores_at + 4]  # the scores end the log
    assert f"Checkpoints in {checkpoints}; TensorBoard logs in {runs}" in log

    # TensorBoard: the final scores at ITER_MAX and the merged config as YAML text.
    for tag, name in [("eval/mean_iou", "mean_iou"), ("eval/pixel_accuracy", "pixel_accuracy"),
                      ("eval/mean_accuracy", "mean_accuracy"),
                      ("eval/frequency_weighted_iou", "frequency_weighted_iou")]:
        [event] = tb.Scalars(tag)
        assert event.step == 4
        assert event.value == pytest.approx(results[name], rel=1e-6)
    assert "config/text_summary" in tb.Tags()["tensors"]
    [text] = tb.Tensors("config/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert markdown.startswith("```yaml\n") and markdown.endswith("```")
    merged = yaml.safe_load(markdown[len("```yaml\n"):-3])
    assert merged["SOLVER"]["ITER_SNAP"] == 2  # the override, not the file's 100
    assert merged["MODEL"] == cfg.to_dict()["MODEL"]

    # A second launch (resumed, without evaluation) appends to the same log.
    first = (runs / "train.log").read_text()
    result = CliRunner().invoke(train.main, args + [
        "--resume", str(checkpoints / "checkpoint_2.pth"), "--no-eval"])
    assert result.exit_code == 0, result.output
    both = (runs / "train.log").read_text()
    assert both.startswith(first)
    second = both[len(first):].splitlines()
    assert SEPARATOR.match(second[0]) and second[1] == "Training summary"
    assert "  iterations:   3..4 (resumed at 2)" in second
    assert [line.split("  ")[0] for line in second if line.startswith("iter ")] == ["iter 4/4"]
    assert not any(line.startswith("Final scores") for line in second)
    assert sum(bool(SEPARATOR.match(line)) for line in both.splitlines()) == 2


def test_record_scores_takes_a_plain_dict(toy_cfg):
    cfg = narrow(toy_cfg, ITER_MAX=7)
    record_scores(cfg, {"mean_iou": 0.5, "pixel_accuracy": 0.875, "mean_accuracy": None})
    record_scores(cfg, {"mean_iou": 0.625})
    runs = Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID
    assert (runs / "train.log").read_text().splitlines() == [
        "Final scores:", f"  {'Pixel Accuracy':<24} 87.50%", f"  {'Mean IoU':<24} 50.00%",
        "Final scores:", f"  {'Mean IoU':<24} 62.50%"]
    tb = events(cfg)
    assert [(e.step, e.value) for e in tb.Scalars("eval/mean_iou")] == [(7, 0.5), (7, 0.625)]
    assert [e.value for e in tb.Scalars("eval/pixel_accuracy")] == [0.875]
    assert "eval/mean_accuracy" not in tb.Tags()["scalars"]  # None is left out


def test_progress_bar_stays_on_screen():
    bar = progress_bar(2, 5, enabled=True)
    try:
        assert bar.leave and bar.n == 2 and bar.total == 5
        assert list(bar) == [3, 4, 5]
    finally:
        bar.close()


def test_periodic_evaluation_logs_scores_and_leaves_the_training_unchanged(
        toy_cfg, tmp_path, one_torch_thread):
    """SOLVER.ITER_EVAL scores the test split during training (train.log, eval/* at those
    steps) without changing a single weight: the evaluation's DataLoader draws from torch's
    generator, which is restored."""
    cfg, config = feedback_config(toy_cfg, tmp_path)
    base = ["--config", str(config), "--no-cuda"]
    result = CliRunner().invoke(train.main, base + ["--set", "SOLVER.ITER_EVAL=1"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("Scores at")] == [
        "Scores at iteration 1 (split 'test', 4 images):",
        "Scores at iteration 2 (split 'test', 4 images):",
        "Scores at iteration 3 (split 'test', 4 images):"]
    log = (Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID / "train.log").read_text().splitlines()
    at_2 = log.index("Scores at iteration 2 (split 'test', 4 images):")
    assert log[at_2 + 3].startswith("  Mean IoU ")
    tb = events(cfg)
    steps = [event.step for event in tb.Scalars("eval/mean_iou")]
    assert steps == [1, 2, 3, 4]  # 4: the final score after training
    logged = tb.Scalars("eval/mean_iou")[1].value
    assert f"  Mean IoU{'':<16}{logged * 100:6.2f}%" == log[at_2 + 3]

    checkpoints = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    with_scores = torch.load(checkpoints / "checkpoint_final.pth", weights_only=True)["model"]
    plain = ["--set", f"EXP.ID={cfg.EXP.ID}-plain", "--no-eval"]
    result = CliRunner().invoke(train.main, base + plain)
    assert result.exit_code == 0, result.output
    assert "Scores at" not in result.output
    without = torch.load(Path(cfg.EXP.OUTPUT_DIR) / f"{cfg.EXP.ID}-plain" /
                         "checkpoint_final.pth", weights_only=True)["model"]
    assert with_scores.keys() == without.keys()
    assert all(torch.equal(with_scores[k], without[k]) for k in without)
