"""Segmentation scores from one confusion matrix (rows: ground truth, columns: prediction).

``Mean Accuracy`` and ``Mean IoU`` average over the classes present in the ground truth only,
so stray predictions of classes the benchmark never labels do not move the mean (docs/eval.md).
"""

import numpy as np

from ..utils.meters import SCORE_LABELS

SCORE_NAMES = tuple(SCORE_LABELS)


def confusion_matrix(label_true, label_pred, n_class):
    """Confusion matrix of one label map; true labels outside 0..n_class-1 are ignored."""
    label_true, label_pred = np.asarray(label_true, np.int64), np.asarray(label_pred, np.int64)
    if label_true.shape != label_pred.shape:
        raise ValueError(f"label map shapes differ: ground truth {label_true.shape}, "
                         f"prediction {label_pred.shape}")
    labelled = (label_true >= 0) & (label_true < n_class)
    label_true, label_pred = label_true[labelled], label_pred[labelled]
    if label_pred.size and (label_pred.min() < 0 or label_pred.max() >= n_class):
        bad = label_pred[(label_pred < 0) | (label_pred >= n_class)][0]
        raise ValueError(f"predicted label {bad} is outside 0..{n_class - 1}")
    counts = np.bincount(n_class * label_true + label_pred, minlength=n_class * n_class)
    return counts.reshape(n_class, n_class)


class ConfusionMatrix:
    """Running confusion matrix, so evaluation keeps no label maps in memory."""

    def __init__(self, n_class):
        self.n_class = int(n_class)
        self.hist = np.zeros((self.n_class, self.n_class), dtype=np.int64)

    def update(self, label_true, label_pred):
        self.hist += confusion_matrix(label_true, label_pred, self.n_class)

    def scores(self):
        """The :data:`SCORE_NAMES` (floats; NaN if no pixel is labelled) and ``class_iou``
        (``{class index: IoU}``); the module docstring says which classes enter the means."""
        hist = self.hist.astype(np.float64)
        total = hist.sum()
        diag = np.diag(hist)
        gt_count = hist.sum(axis=1)
        union = gt_count + hist.sum(axis=0) - diag
        present = gt_count > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, diag / union, np.nan)
            class_acc = diag / gt_count
        if total == 0:
            pixel_acc = mean_acc = fw_iou = mean_iou = float("nan")
        else:
            pixel_acc = float(diag.sum() / total)
            mean_acc = float(class_acc[present].mean())
            mean_iou = float(iou[present].mean())
            fw_iou = float((gt_count[present] / total * iou[present]).sum())
        return {"pixel_accuracy": pixel_acc, "mean_accuracy": mean_acc, "mean_iou": mean_iou,
                "frequency_weighted_iou": fw_iou,
                "class_iou": {i: float(iou[i]) for i in range(self.n_class)}}

