"""What a training run shows in TensorBoard, beside the scalars :class:`~.runlog.Monitor` adds.

Scalars: ``loss/train`` and its moving average, ``lr/<group>``, ``speed/images_per_s``
(images of the whole update over all processes, per second of wall time, data
loading included), ``memory/peak_gib`` (CUDA: peak allocated tensor memory; CPU:
peak resident memory of the process), on CUDA also ``memory/max_allocated_GB``,
with fp16 ``amp/loss_scale``, and the scores as ``eval/<key>``.

Images (every ``SOLVER.ITER_TB`` iterations): ``train/panel``, one picture of the
batch's first image | its ground truth | the prediction, enlarged so its shorter
side is at least 256 px, with a legend of the classes shown (see :func:`log_images`).
"""

import math
from pathlib import Path

import numpy as np
import yaml

from ..datasets import to_rgb_uint8
from ..models.geometry import upsample_logits
from ..utils.meters import SCORE_LABELS
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


def config_markdown(cfg):
    """The merged config as YAML in a Markdown code block (TensorBoard's text tab)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    return f"```yaml\n{text}```"


def add_score_scalars(writer, scores, step):
    """The headline scores as ``eval/<key>`` scalars at ``step``; missing or non-finite left out."""
    for key in SCORE_LABELS:
        value = scores.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(f"eval/{key}", value, step)


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
