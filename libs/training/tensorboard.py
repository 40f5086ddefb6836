"""What a training run shows in TensorBoard: scalars every iteration, an image panel now and then.

Scalars: ``loss/train`` and its moving average, ``lr/<group>``, ``speed/images_per_s``
(images of the whole update over all processes, per second of wall time, data
loading included), ``memory/peak_gib`` (CUDA: peak allocated tensor memory; CPU:
peak resident memory of the process), on CUDA also ``memory/max_allocated_GB``,
and with fp16 ``amp/loss_scale``.

Images (every ``SOLVER.ITER_TB`` iterations): ``train/panel``, one picture of the
batch's first image | its ground truth | the prediction, enlarged so its shorter
side is at least 256 px, with a legend of the classes shown (see :func:`log_images`).
"""

from pathlib import Path

import numpy as np
import torch

from ..datasets import to_rgb_uint8
from ..models.geometry import upsample_logits
from ..utils.visualize import (PANEL_LEGEND_ROWS, colorize, legend_entries, palette,
                               side_by_side)


def log_dir(exp):
    """The TensorBoard folder of a run, from the config's ``EXP`` section."""
    return Path(exp.LOG_DIR) / exp.ID


def open_writer(path, purge_step=None):
    """A ``SummaryWriter`` for ``path`` (imported here: TensorBoard is slow to import).

    ``purge_step`` (a resumed run: the checkpoint's iteration + 1) makes TensorBoard
    drop the events the interrupted run wrote from that step on, so the curves
    show each step once.
    """
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path), purge_step=purge_step)


def log_scalars(writer, iteration, loss, average, optimizer, device):
    """The loss, its moving average, each group's learning rate and the peak GPU memory."""
    writer.add_scalar("loss/train", loss, iteration)
    writer.add_scalar("loss/train_moving_average", average, iteration)
    for group in optimizer.param_groups:
        writer.add_scalar(f"lr/{group['name']}", group["lr"], iteration)
    if device.type == "cuda":
        writer.add_scalar("memory/max_allocated_GB",
                          torch.cuda.max_memory_allocated(device) / 2**30, iteration)


def log_speed(writer, iteration, images_per_s, peak_gib, scaler=None):
    """Throughput, peak memory and, when fp16 loss scaling is on, the current loss scale."""
    writer.add_scalar("speed/images_per_s", images_per_s, iteration)
    if peak_gib is not None:
        writer.add_scalar("memory/peak_gib", peak_gib, iteration)
    if scaler is not None and scaler.is_enabled():
        writer.add_scalar("amp/loss_scale", scaler.get_scale(), iteration)


def log_images(writer, images, labels, fused, n_classes, ignore_label, mean, iteration,
               class_names=None):
    """``train/panel``: the batch's first image, its ground truth and the prediction, side by side.

    The crop (97 px in ``config/toy.yaml``) would be a thumbnail in TensorBoard,
    so the three are enlarged by a whole factor until the shorter side is at
    least ``PANEL_MIN_SIDE`` (256) px, the label maps by nearest neighbour; a
    legend of the classes in either label map (largest first, ``ignored`` in its
    own colour) is on the right. ``fused`` are the fused logits of the batch;
    ``mean`` is ``IMAGE.MEAN``, added back to show the network input as a photo;
    ``class_names`` (default: the class numbers) label the legend.
    """
    prediction = upsample_logits(fused[:1].float(), labels.shape[-2:]).argmax(1)[0].cpu().numpy()
    truth = labels[0].cpu().numpy()
    names = class_names if class_names is not None else [str(i) for i in range(n_classes)]
    both = np.concatenate([truth.ravel(), prediction.ravel()])
    entries = legend_entries(both, names, palette(n_classes), max_rows=PANEL_LEGEND_ROWS,
                             ignore_label=ignore_label)
    panel = side_by_side([to_rgb_uint8(images[0], mean),
                          colorize(truth, n_classes, ignore_label),
                          colorize(prediction, n_classes, ignore_label)],
                         ["image", "ground truth", "prediction"], entries,
                         nearest=[False, True, True])
    writer.add_image("train/panel", panel, iteration, dataformats="HWC")
