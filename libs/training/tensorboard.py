"""What a training run shows in TensorBoard: scalars every iteration, an image panel now and then.

Scalars: ``loss/train`` and its moving average, ``lr/<group>``, ``speed/images_per_s``
(images of the whole update over all processes, per second of wall time, data
loading included), ``memory/peak_gib`` (CUDA: peak allocated tensor memory; CPU:
peak resident memory of the process), on CUDA also ``memory/max_allocated_GB``,
and with fp16 ``amp/loss_scale``.
"""

from pathlib import Path

import torch

from ..datasets import to_rgb_uint8
from ..models.geometry import upsample_logits
from ..utils.visualize import colorize


def log_dir(exp):
    """The TensorBoard folder of a run, from the config's ``EXP`` section."""
    return Path(exp.LOG_DIR) / exp.ID


def open_writer(path):
    """A ``SummaryWriter`` for ``path`` (imported here: TensorBoard is slow to import)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))


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


def log_images(writer, images, labels, fused, n_classes, ignore_label, mean, iteration):
    """The first image of the batch, its ground truth and the prediction, in colour.

    ``fused`` are the fused logits of the batch; ``mean`` is ``IMAGE.MEAN``,
    added back to show the network input as a photo.
    """
    prediction = upsample_logits(fused[:1].float(), labels.shape[-2:]).argmax(1)[0].cpu().numpy()
    writer.add_image("train/image", to_rgb_uint8(images[0], mean), iteration,
                     dataformats="HWC")
    writer.add_image("train/ground_truth", colorize(labels[0].numpy(), n_classes, ignore_label),
                     iteration, dataformats="HWC")
    writer.add_image("train/prediction", colorize(prediction, n_classes, ignore_label), iteration,
                     dataformats="HWC")
