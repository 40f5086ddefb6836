"""What a training run shows in TensorBoard beside :class:`~.runlog.Monitor`'s scalars and config:
the image panel and the scores (README, "Training", lists the tags)."""

import math
from pathlib import Path

import numpy as np

from ..datasets import to_rgb_uint8
from ..models.geometry import upsample_logits
from ..utils.meters import SCORE_LABELS
from ..utils.visualize import PANEL_LEGEND_ROWS, colorize, legend_entries, palette, side_by_side


def log_dir(exp):
    """The TensorBoard folder of a run, from the config's ``EXP`` section."""
    return Path(exp.LOG_DIR) / exp.ID


def open_writer(path, purge_step=None):
    """A ``SummaryWriter`` for ``path`` (imported here: TensorBoard is slow to import); a resumed
    run's ``purge_step`` drops the steps the interrupted run logged after its checkpoint."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path), purge_step=purge_step)


def add_score_scalars(writer, scores, step):
    """The headline scores as ``eval/<key>`` scalars at ``step``; missing or non-finite left out."""
    for key in SCORE_LABELS:
        value = scores.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(f"eval/{key}", value, step)


def log_images(writer, batch, fused, cfg, step, class_names=None):
    """``train/panel``: the first image of ``batch`` (ids, images, labels), its ground truth and the
    prediction of the ``fused`` logits side by side, enlarged by a whole factor to at least 256 px
    (a 97-px crop would be a thumbnail), with a legend of the classes in either label map."""
    _, images, labels = batch
    n_classes, ignore_label = cfg.DATASET.N_CLASSES, cfg.DATASET.IGNORE_LABEL
    prediction = upsample_logits(fused[:1].float(), labels.shape[-2:]).argmax(1)[0].cpu().numpy()
    truth = labels[0].cpu().numpy()
    names = class_names if class_names is not None else [str(i) for i in range(n_classes)]
    both = np.concatenate([truth.ravel(), prediction.ravel()])
    entries = legend_entries(both, names, palette(n_classes), max_rows=PANEL_LEGEND_ROWS,
                             ignore_label=ignore_label)
    panel = side_by_side([to_rgb_uint8(images[0], cfg.IMAGE.MEAN),
                          colorize(truth, n_classes, ignore_label),
                          colorize(prediction, n_classes, ignore_label)],
                         ["image", "ground truth", "prediction"], entries,
                         nearest=[False, True, True])
    writer.add_image("train/panel", panel, step, dataformats="HWC")
