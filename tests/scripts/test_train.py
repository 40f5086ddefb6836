"""Training (libs/training and train.py): the poly schedule, parameter groups, accumulation,
exact resume, DDP, logging, and the one-line errors of the script."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from tests.support_training import train_step
from tests.tiny_model import narrow

import train
from libs.models import build_model
from libs.utils.errors import CheckpointError, TrainingError
from libs.training.checkpoint import load_initial_weights
from libs.training.loop import train as run_training
from libs.training.loop import poly_lr, set_learning_rates
from libs.training.optim import build_optimizer
from libs.utils.atomic import save_torch

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
# Measured here: 40 iterations of batch 4 take the tiny net from 0.082 to 0.549 mean IoU on
# the 4 held-out images (chance is about 1/8 per class); the bar leaves room for BLAS noise.
LEARN_ITERATIONS = 40
LEARN_MIOU_BAR = 0.4


small = narrow  # the toy config with a narrow model (tests/tiny_model.py)


def write_config(cfg, path):
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def final_weights(cfg):
    path = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID / "checkpoint_final.pth"
    return torch.load(path, weights_only=True)


def test_poly_schedule_and_group_learning_rates(toy_cfg):
    cfg = small(toy_cfg, ITER_MAX=100, LR=1e-3, POLY_POWER=0.9, LR_DECAY=10)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    optimizer = build_optimizer(model, cfg.SOLVER)
    groups = {g["name"]: g for g in optimizer.param_groups}
    for iteration, step_start in [(1, 0), (10, 0), (11, 10), (20, 10), (21, 20), (100, 90)]:
        set_learning_rates(optimizer, cfg.SOLVER, iteration)  # LR 1e-3, 100 iterations, 0.9, 10
        expected = 1e-3 * (1 - step_start / 100) ** 0.9
        assert poly_lr(1e-3, iteration, 100, 0.9, 10) == pytest.approx(expected, rel=1e-12)
        assert groups["backbone"]["lr"] == pytest.approx(expected, rel=1e-12)
        assert groups["head_weights"]["lr"] == pytest.approx(10 * expected, rel=1e-12)
        assert groups["head_biases"]["lr"] == pytest.approx(20 * expected, rel=1e-12)
    assert groups["backbone"]["weight_decay"] == groups["head_weights"]["weight_decay"] == 5e-4
    assert groups["head_biases"]["weight_decay"] == 0.0
    # Every trainable parameter is in exactly one group; no BatchNorm parameter is.
    in_groups = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(in_groups) == sorted(trainable)
    names = {id(p): n for n, p in model.named_parameters()}
    assert not any(".bn." in names[i] for i in in_groups)
    assert all(names[id(p)].startswith("base.aspp.") and names[id(p)].endswith("bias")
               for p in groups["head_biases"]["params"])
    assert len(groups["head_weights"]["params"]) == len(groups["head_biases"]["params"]) == 4
    with pytest.raises(ValueError, match="outside 1..100"):
        poly_lr(1e-3, 101, 100, 0.9, 10)


def caffe_reference_loss(outputs, labels):
    """Caffe's loss of a 49 crop, built by hand: targets ``labels[::8, ::8]`` (full, fused,
    and the 0.75x branch upsampled corner-aligned to 7x7) and ``labels[::16, ::16]`` (0.5x);
    each image's cross-entropy averaged over its own valid pixels, then over the images."""
    full, half, three_quarter, fused = outputs
    at8, at16 = labels[:, ::8, ::8], labels[:, ::16, ::16]
    assert full.shape[-2:] == at8.shape[-2:] == (7, 7) and half.shape[-2:] == at16.shape[-2:]
    up = F.interpolate(three_quarter, size=(7, 7), mode="bilinear", align_corners=True)
    total = 0.0
    for n in range(len(labels)):
        for logits, target in [(full, at8), (half, at16), (up, at8), (fused, at8)]:
            if (target[n] != 255).any():  # an image without valid pixels adds nothing
                total += F.cross_entropy(logits[n:n + 1], target[n:n + 1], ignore_index=255)
    return total / len(labels)


def test_gradient_accumulation_equals_one_big_batch(toy_cfg):
    cfg = small(toy_cfg)
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).train()
    assert model.scales == [0.5, 0.75] and model.geometry == "caffe"
    images = torch.randn(4, 3, 49, 49)
    labels = torch.randint(0, cfg.DATASET.N_CLASSES, (4, 49, 49))
    labels[0, :30] = 255  # images with different numbers of ignored pixels
    labels[1] = 255  # and one without any valid pixel
    labels[3, :, :10] = 255

    def gradients(sub_batches):
        model.zero_grad(set_to_none=True)
        loss, _ = train_step(model, sub_batches)
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    ids = ["a"] * 4
    loss_whole, whole = gradients([(ids, images, labels)])
    loss_split, split = gradients([(ids[:1], images[:1], labels[:1]),
                                   (ids[1:], images[1:], labels[1:])])
    assert loss_split == pytest.approx(loss_whole, rel=1e-6)
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-5, atol=1e-8)
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 4
    assert loss_whole == pytest.approx(caffe_reference_loss(outputs, labels).item(), rel=1e-6)


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(toy_cfg, tmp_path):
    cfg = small(toy_cfg, ITER_MAX=6, ITER_SNAP=3, ITER_SIZE=2, LR_DECAY=2)
    cfg.SOLVER.BATCH_SIZE.TRAIN = 2  # 12 images: 6 sub-batches per epoch, resume crosses one
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "full")
    run_training(cfg, CPU, progress=False)
    uninterrupted = final_weights(cfg)

    checkpoint = tmp_path / "full" / cfg.EXP.ID / "checkpoint_3.pth"
    state = torch.load(checkpoint, weights_only=True)
    assert state["iteration"] == 3 and {"model", "optimizer", "rng", "config"} <= set(state)
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "resumed")
    run_training(cfg, CPU, resume=checkpoint, progress=False)
    resumed = final_weights(cfg)
    assert resumed["iteration"] == 6
    for key, value in uninterrupted["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    # And the run really moved: the weights after 6 iterations differ from those after 3.
    assert not torch.equal(state["model"]["base.aspp.c0.weight"],
                           resumed["model"]["base.aspp.c0.weight"])


def test_two_process_gloo_run_equals_one_process(toy_cfg, tmp_path):
    cfg = small(toy_cfg, ITER_MAX=3, ITER_SNAP=100, ITER_SIZE=2)
    cfg.SOLVER.BATCH_SIZE.TRAIN = 2
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "single")
    run_training(cfg, CPU, progress=False)
    single = final_weights(cfg)["model"]

    cfg.SOLVER.BATCH_SIZE.TRAIN = 1  # per process: 2 processes x 1 = the same global batch
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "ddp")
    cfg.EXP.LOG_DIR = str(tmp_path / "ddp-runs")  # train.py refuses the single run's log folder
    config = write_config(cfg, tmp_path / "ddp.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO_ROOT / "train.py"), "--config", str(config), "--no-cuda", "--no-eval"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    distributed = final_weights(cfg)["model"]
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert not list((tmp_path / "ddp" / cfg.EXP.ID).glob("*.tmp*"))


def test_checkpoints_and_tensorboard_logs(toy_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small(toy_cfg, ITER_MAX=4, ITER_SNAP=2, ITER_TB=2, AVERAGE_LOSS=20)
    run_training(cfg, CPU, progress=False)
    out = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint_2.pth", "checkpoint_4.pth", "checkpoint_final.pth"]
    # the final checkpoint is the last snapshot, stored once (a hard link), not a second copy
    assert (out / "checkpoint_final.pth").samefile(out / "checkpoint_4.pth")
    assert (out / "checkpoint_4.pth").stat().st_nlink == 2
    events = EventAccumulator(str(Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID),
                              size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/train_moving_average", "lr/backbone", "lr/head_weights",
            "lr/head_biases"} <= set(tags["scalars"])
    assert "train/panel" in tags["images"]
    assert [e.step for e in events.Images("train/panel")] == [2, 4]
    raw = [e.value for e in events.Scalars("loss/train")]
    average = [e.value for e in events.Scalars("loss/train_moving_average")]
    assert average[-1] == pytest.approx(sum(raw) / len(raw), rel=1e-5)
    lrs = {e.step: e.value for e in events.Scalars("lr/head_biases")}
    assert lrs[1] == pytest.approx(20 * cfg.SOLVER.LR, rel=1e-6)


def test_backbone_only_init_keeps_the_aspp_initialisation(toy_cfg, tmp_path, capsys):
    cfg = small(toy_cfg)
    torch.manual_seed(1)
    donor = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    backbone = {k: v for k, v in donor.state_dict().items() if ".aspp." not in k}
    save_torch(backbone, tmp_path / "init.pth")
    torch.manual_seed(2)
    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    aspp_before = model.base.aspp.c0.weight.detach().clone()
    load_initial_weights(model, tmp_path / "init.pth")
    assert "ASPP keeps its initialisation" in capsys.readouterr().out
    assert torch.equal(model.base.aspp.c0.weight, aspp_before)
    assert torch.equal(model.base.backbone.conv1.conv.weight, donor.base.backbone.conv1.conv.weight)

    load_initial_weights(model, None)
    assert "Warning: MODEL.INIT_MODEL is null" in capsys.readouterr().out
    assert torch.equal(model.base.aspp.c0.weight, aspp_before)

    other_labels = build_model(cfg.MODEL, 5)  # e.g. a COCO-Stuff model, fine-tuned on new labels
    save_torch({"model": other_labels.state_dict()}, tmp_path / "five.pth")
    load_initial_weights(model, tmp_path / "five.pth")
    out = capsys.readouterr().out
    assert "five.pth: its classifier is for 5 classes, not 8; dropped" in out
    assert "ASPP keeps its initialisation" in out
    assert torch.equal(model.base.aspp.c0.weight, aspp_before)
    assert torch.equal(model.base.backbone.res5.a.branch2a.conv.weight,
                       other_labels.base.backbone.res5.a.branch2a.conv.weight)
    partial = dict(backbone)
    del partial["base.backbone.res2.a.branch2a.conv.weight"]
    save_torch(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="res2.a.branch2a.conv.weight"):
        load_initial_weights(model, tmp_path / "partial.pth")


def run_cli(args):
    return CliRunner().invoke(train.main, args)


def test_cli_errors_are_one_line(toy_cfg, tmp_path):
    bad = toy_cfg.to_dict()
    bad["SOLVER"]["LRR"] = bad["SOLVER"].pop("LR")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = run_cli(["--config", str(path), "--no-cuda"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {path}: unknown key SOLVER.LRR"

    cfg = small(toy_cfg)
    cfg.MODEL.INIT_MODEL = str(tmp_path / "missing.pth")
    result = run_cli(["--config", str(write_config(cfg, tmp_path / "c.yaml")), "--no-cuda"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {tmp_path / 'missing.pth'}: initial weights (MODEL.INIT_MODEL) not found; write "
        "them with `python convert.py --dataset coco_init`, or set MODEL.INIT_MODEL: null")

    truncated = tmp_path / "truncated.pth"
    save_torch(build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    cfg.MODEL.INIT_MODEL = None
    result = run_cli(["--config", str(write_config(cfg, tmp_path / "c.yaml")), "--no-cuda",
                      "--resume", str(truncated)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {truncated}: not a readable PyTorch weight file")
    assert len(result.output.strip().splitlines()) == 1

    wider = build_model(cfg.MODEL | {"BACKBONE": cfg.MODEL.BACKBONE | {"BASE_WIDTH": 16}}, cfg.DATASET.N_CLASSES)
    foreign = tmp_path / "foreign.pth"
    save_torch({"model": wider.state_dict(), "optimizer": {}, "iteration": 1}, foreign)
    result = run_cli(["--config", str(write_config(cfg, tmp_path / "c.yaml")), "--no-cuda",
                      "--resume", str(foreign)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {foreign}: does not match the model: ")
    assert "wrong shape" in result.output and len(result.output.strip().splitlines()) == 1


def test_unknown_model_and_dataset_too_small_are_one_line(toy_cfg, tmp_path):
    cfg = small(toy_cfg)
    cfg.MODEL.NAME = "DeepLabV3"
    config = write_config(cfg, tmp_path / "model.yaml")
    result = run_cli(["--config", str(config), "--no-cuda"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {config}: unknown MODEL.NAME 'DeepLabV3'")
    assert len(result.output.strip().splitlines()) == 1

    cfg.MODEL.NAME = "DeepLabV2_ResNet101_MSC"
    cfg.SOLVER.BATCH_SIZE.TRAIN = 13  # the synthetic train split has 12 images
    result = run_cli(["--config", str(write_config(cfg, tmp_path / "big.yaml")), "--no-cuda"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (  # after the warning and the bar
        f"Error: {cfg.DATASET.ROOT}: split 'train' has 12 images, fewer than one batch of "
        "13 x 1 process(es)")


def test_a_non_finite_loss_stops_with_one_line(toy_cfg, tmp_path, monkeypatch):
    import libs.training.loop

    monkeypatch.setattr(libs.training.loop, "msc_loss_terms",
                        lambda *args: torch.full((1, 1), float("nan"), requires_grad=True))
    cfg = small(toy_cfg, ITER_MAX=3)
    with pytest.raises(TrainingError, match="loss is nan at iteration 1; stopping"):
        run_training(cfg, CPU, progress=False)
    assert issubclass(TrainingError, FloatingPointError)
    # --overwrite: the library run above left its logs under the same EXP.ID
    result = run_cli(["--config", str(write_config(cfg, tmp_path / "c.yaml")), "--no-cuda",
                      "--overwrite"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: loss is nan at iteration 1; stopping"


def test_help():
    result = run_cli(["--help"])
    assert result.exit_code == 0
    assert "--resume" in result.output and "--cuda / --no-cuda" in result.output


def test_tiny_model_learns_the_synthetic_classes(toy_cfg):
    """Chance is about 1/8 per class; a tiny net from scratch reaches a mean IoU far above it."""
    from libs.inference.evaluation import EvalOptions, evaluate

    cfg = small(toy_cfg, ITER_MAX=LEARN_ITERATIONS, ITER_SNAP=10**6, ITER_TB=10**6, ITER_SIZE=1)
    cfg.SOLVER.BATCH_SIZE.TRAIN = 4
    model = run_training(cfg, CPU, progress=False).eval()
    torch.manual_seed(cfg.EXP.SEED)  # the same seed's untrained weights, for contrast
    before = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES).eval()
    trained = evaluate(cfg, model, CPU, EvalOptions(progress=False))[0].scores()["mean_iou"]
    untrained = evaluate(cfg, before, CPU, EvalOptions(progress=False))[0].scores()["mean_iou"]
    assert untrained < 0.15
    print(f"mean IoU untrained {untrained:.3f} trained {trained:.3f}")
    assert trained > LEARN_MIOU_BAR, (trained, untrained)
