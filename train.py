#!/usr/bin/env python
"""Train DeepLab v2 with the protocol of the paper (see README, "Training").

Runs on the CPU, on one GPU, on all GPUs of a machine (DataParallel, as the
original), or on several processes/machines under ``torchrun``
(DistributedDataParallel with NCCL on GPUs, Gloo on CPUs).
"""

import contextlib
import random
import sys
from pathlib import Path

import click
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from libs.datasets import DatasetError, build_dataset, to_rgb_uint8
from libs.datasets.sampler import EpochBatchSampler
from libs.models import build_model
from libs.training import distributed
from libs.models.weights import (
    CheckpointError,
    load_file,
    load_model_weights,
    load_state_dict_checked,
)
from libs.utils.atomic import save_torch
from libs.utils.device import choose_device
from libs.models.geometry import upsample_logits
from libs.utils.config import ConfigError, load_config
from libs.inference.evaluation import evaluate_and_report
from libs.training.loss import count_valid, msc_loss_sum
from libs.training.lr_policy import set_learning_rates
from libs.utils.meters import MovingAverage
from libs.utils.visualize import colorize

GROUP_NAMES = ("backbone", "aspp_weight", "aspp_bias")


def parameter_groups(model, cfg):
    """SGD groups of DeepLab v2: backbone weights 1x, ASPP weights 10x, ASPP biases 20x.

    BatchNorm parameters are frozen (``requires_grad=False``) and so belong to no
    group. ASPP biases get no weight decay, as in the Caffe solver.
    """
    mult, decay = cfg.SOLVER.LR_MULT, cfg.SOLVER.WEIGHT_DECAY
    groups = {name: [] for name in GROUP_NAMES}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if ".aspp." in f".{name}":
            groups["aspp_bias" if name.endswith(".bias") else "aspp_weight"].append(param)
        else:
            groups["backbone"].append(param)
    settings = {
        "backbone": (mult.BACKBONE, decay),
        "aspp_weight": (mult.ASPP_WEIGHT, decay),
        "aspp_bias": (mult.ASPP_BIAS, 0.0),
    }
    return [
        {
            "name": name,
            "params": groups[name],
            "lr": cfg.SOLVER.LR * settings[name][0],
            "lr_mult": settings[name][0],
            "weight_decay": settings[name][1],
        }
        for name in GROUP_NAMES
    ]


def build_optimizer(model, cfg):
    return torch.optim.SGD(
        parameter_groups(model, cfg), lr=cfg.SOLVER.LR, momentum=cfg.SOLVER.MOMENTUM
    )


def load_initial_weights(model, path, log=print):
    """Start from converted Caffe weights or an earlier checkpoint, or from scratch.

    The COCO init model carries only the backbone (its classifier is not an
    ASPP), so the ASPP keeps its own N(0, 0.01) initialisation; anything else
    missing is an error, since a silently half-loaded model trains to nonsense.
    """
    if path is None:
        log("Warning: MODEL.INIT_MODEL is null, so training starts from random weights "
            "(the published numbers start from the converted COCO init model).")
        return
    if not Path(path).is_file():
        raise CheckpointError(
            f"{path}: initial weights (MODEL.INIT_MODEL) not found; write them with "
            "`python convert.py --dataset coco_init`, or set MODEL.INIT_MODEL: null"
        )
    n_classes = model.base.aspp["c0"].out_channels
    missing = load_model_weights(model, path, n_classes, optional_prefix="base.aspp.")
    if missing:
        log(f"Loaded backbone weights from {path}; the ASPP keeps its initialisation.")
    else:
        log(f"Loaded all weights from {path}.")


def batch_stream(dataset, cfg, rank, world_size, start, pin_memory):
    """Endless sub-batches, epoch after epoch, beginning ``start`` sub-batches in.

    A new DataLoader per epoch hands the epoch number to the workers, so every
    augmentation is drawn from ``(seed, epoch, index)`` whatever the worker count.
    """
    batch_size = cfg.SOLVER.BATCH_SIZE.TRAIN
    per_epoch = EpochBatchSampler.batches_per_epoch(len(dataset), batch_size, world_size)
    if per_epoch < 1:
        raise DatasetError(
            f"{cfg.DATASET.ROOT}: split {cfg.DATASET.SPLIT.TRAIN!r} has {len(dataset)} images, "
            f"fewer than one batch of {batch_size} x {world_size} process(es)"
        )
    epoch, skip = divmod(start, per_epoch)
    while True:
        dataset.set_epoch(epoch)
        sampler = EpochBatchSampler(
            len(dataset), batch_size, cfg.EXP.SEED, epoch, rank, world_size, skip
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            pin_memory=pin_memory,
        )
        yield from loader
        epoch, skip = epoch + 1, 0


def train_step(net, sub_batches, device, ignore_label, world_size, autocast):
    """Accumulate the gradients of one iteration over its sub-batches.

    Each output's summed cross-entropy is divided by that output's number of
    valid pixels over the whole iteration (all sub-batches, all processes), so
    the gradient equals that of one big batch however it is split. DDP averages
    gradients over processes, hence the ``* world_size``. Returns the loss of
    the iteration and the last sub-batch's fused logits (for logging).
    """
    total = torch.zeros((), device=device)
    counts = None
    last = len(sub_batches) - 1
    for i, (_, images, labels) in enumerate(sub_batches):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        no_sync = getattr(net, "no_sync", None)
        sync = no_sync() if (no_sync is not None and i < last) else contextlib.nullcontext()
        with sync:
            with autocast():
                outputs = net(images)
            if counts is None:  # every crop has one size, so the logit sizes are fixed
                sizes = [out.shape[-2:] for out in outputs]
                counts = sum(
                    count_valid(batch[2].to(device), sizes, ignore_label) for batch in sub_batches
                )
                counts = distributed.all_reduce_sum(counts).clamp(min=1)
            loss = (msc_loss_sum(outputs, labels, ignore_label) / counts).sum()
            (loss * world_size).backward()
        total += loss.detach()
    return distributed.all_reduce_sum(total).item(), outputs[-1].detach()


def rng_state():
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(cfg):
    return Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID


def save_checkpoint(path, model, optimizer, iteration, cfg):
    save_torch(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "rng": rng_state(),
            "config": cfg.to_dict(),
        },
        path,
    )


def log_images(writer, images, labels, fused, cfg, iteration):
    """The first image of the batch, its ground truth and the prediction, in colour."""
    n_classes, ignore = cfg.DATASET.N_CLASSES, cfg.DATASET.IGNORE_LABEL
    prediction = upsample_logits(fused[:1].float(), labels.shape[-2:]).argmax(1)[0].cpu().numpy()
    writer.add_image("train/image", to_rgb_uint8(images[0], cfg.IMAGE.MEAN), iteration,
                     dataformats="HWC")
    writer.add_image("train/ground_truth", colorize(labels[0].numpy(), n_classes, ignore),
                     iteration, dataformats="HWC")
    writer.add_image("train/prediction", colorize(prediction, n_classes, ignore), iteration,
                     dataformats="HWC")


def train(cfg, device, resume=None, rank=0, world_size=1, data_parallel=False, progress=True):
    """Run (or resume) the training that ``cfg`` describes; return the trained model.

    ``rank``/``world_size`` come from torchrun; only rank 0 logs and writes checkpoints.
    """
    from torch.utils.tensorboard import SummaryWriter

    is_main = rank == 0
    log = tqdm.write if is_main else (lambda *_: None)
    torch.manual_seed(cfg.EXP.SEED)
    random.seed(cfg.EXP.SEED)
    np.random.seed(cfg.EXP.SEED)

    model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    start = 0
    checkpoint = None
    if resume is not None:
        checkpoint = load_file(resume)
        if not isinstance(checkpoint, dict) or not {"model", "optimizer", "iteration"} <= set(checkpoint):
            raise CheckpointError(f"{resume}: not a training checkpoint (no optimizer/iteration)")
        load_state_dict_checked(model, checkpoint["model"], resume, cfg.DATASET.N_CLASSES)
        start = int(checkpoint["iteration"])
        log(f"Resuming from {resume} at iteration {start}.")
    else:
        load_initial_weights(model, cfg.MODEL.INIT_MODEL, log)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng_state(checkpoint["rng"])

    if world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    elif data_parallel:
        net = torch.nn.DataParallel(model)
    else:
        net = model

    if cfg.SOLVER.AMP and device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        if cfg.SOLVER.AMP:
            log("SOLVER.AMP is ignored on the CPU (bf16 autocast is far slower there).")
        autocast = contextlib.nullcontext

    dataset = build_dataset(cfg, "train", augment=True)
    iter_size = cfg.SOLVER.ITER_SIZE
    stream = batch_stream(dataset, cfg, rank, world_size, start * iter_size,
                          pin_memory=device.type == "cuda")
    writer = SummaryWriter(str(Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID)) if is_main else None
    average = MovingAverage(cfg.SOLVER.AVERAGE_LOSS)
    out_dir = checkpoint_dir(cfg)

    bar = tqdm(range(start + 1, cfg.SOLVER.ITER_MAX + 1), initial=start,
               total=cfg.SOLVER.ITER_MAX, dynamic_ncols=True, leave=False,
               disable=not (progress and is_main))
    for iteration in bar:
        base_lr = set_learning_rates(
            optimizer, cfg.SOLVER.LR, iteration, cfg.SOLVER.ITER_MAX, cfg.SOLVER.POLY_POWER,
            cfg.SOLVER.LR_DECAY,
        )
        optimizer.zero_grad(set_to_none=True)
        sub_batches = [next(stream) for _ in range(iter_size)]
        loss, fused = train_step(net, sub_batches, device, cfg.DATASET.IGNORE_LABEL, world_size,
                                 autocast)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at iteration {iteration}; stopping")
        optimizer.step()
        average.add(loss)

        if is_main:
            bar.set_postfix(loss=f"{average.value:.4f}", lr=f"{base_lr:.3g}")
            writer.add_scalar("loss/train", loss, iteration)
            writer.add_scalar("loss/train_moving_average", average.value, iteration)
            for group in optimizer.param_groups:
                writer.add_scalar(f"lr/{group['name']}", group["lr"], iteration)
            if device.type == "cuda":
                writer.add_scalar("memory/max_allocated_GB",
                                  torch.cuda.max_memory_allocated(device) / 2**30, iteration)
            if iteration % cfg.SOLVER.ITER_TB == 0:
                _, images, labels = sub_batches[-1]
                log_images(writer, images, labels, fused, cfg, iteration)
            if iteration % cfg.SOLVER.ITER_SNAP == 0 or iteration == cfg.SOLVER.ITER_MAX:
                save_checkpoint(out_dir / f"checkpoint_{iteration}.pth", model, optimizer,
                                iteration, cfg)
    if is_main:
        save_checkpoint(out_dir / "checkpoint_final.pth", model, optimizer,
                        cfg.SOLVER.ITER_MAX, cfg)
        writer.close()
        log(f"Checkpoints in {out_dir}; TensorBoard logs in {Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID}")
    return model


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config, e.g. config/cocostuff.yaml or config/toy.yaml.")
@click.option("--cuda/--no-cuda", default=None,
              help="Train on the visible GPUs  [default: when CUDA is available]")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue from a training checkpoint exactly where it stopped.")
@click.option("--eval/--no-eval", "evaluate_after", default=True, show_default=True,
              help="Score the final model on the test split when training ends.")
def main(config_path, cuda, resume, evaluate_after):
    """Train DeepLab v2 as configured in CONFIG (every default lives there).

    Launch with torchrun for several processes or machines.
    """
    try:
        cfg = load_config(config_path)
        use_cuda = choose_device(cuda).type == "cuda"
        rank, world_size, device = distributed.setup(use_cuda)
        data_parallel = use_cuda and world_size == 1 and torch.cuda.device_count() > 1
        try:
            model = train(cfg, device, resume, rank, world_size, data_parallel)
        finally:
            distributed.cleanup()
        if evaluate_after and rank == 0:
            evaluate_and_report(cfg, model.eval(), device,
                                Path(checkpoint_dir(cfg)) / "checkpoint_final.json")
    except (ConfigError, DatasetError, CheckpointError, FloatingPointError) as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
