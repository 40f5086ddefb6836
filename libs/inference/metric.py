"""Segmentation scores from a confusion matrix.

Evaluation accumulates one ``n_class x n_class`` confusion matrix (rows: ground
truth, columns: prediction) over every labelled pixel of the test split and
derives all scores from it at the end, so memory does not grow with the number
of images.

Which classes enter the means
-----------------------------
COCO-Stuff 10k has 182 class indices but its annotations use only 171 of them
(11 "thing" indices of COCO are never labelled). A class that never occurs in
the ground truth has no defined accuracy and an IoU that is either undefined
(never predicted either) or 0 (predicted somewhere). Averaging those zeros in
would make the mean depend on the model's stray predictions of classes that the
benchmark does not contain, so:

* ``Mean Accuracy`` and ``Mean IoU`` average over the classes present in the
  ground truth (row sum > 0) only;
* ``Frequency Weighted IoU`` weights each class by its ground-truth frequency,
  so absent classes have weight 0 anyway;
* ``Class IoU`` reports every class: NaN for a class absent from both ground
  truth and prediction, 0.0 for a class that was only predicted.

The original implementation averaged ``nanmean`` over all classes with a
defined IoU, which also counts predicted-but-absent classes as 0; the two agree
whenever the model never predicts an unlabelled class.
"""

import numpy as np

from ..utils.meters import SCORE_LABELS

SCORE_NAMES = tuple(SCORE_LABELS)


def confusion_matrix(label_true, label_pred, n_class):
    """Confusion matrix of one label map; pixels whose true label is not in 0..n_class-1 are ignored."""
    label_true = np.asarray(label_true)
    label_pred = np.asarray(label_pred)
    if label_true.shape != label_pred.shape:
        raise ValueError(
            f"label map shapes differ: ground truth {label_true.shape}, prediction {label_pred.shape}"
        )
    label_true = label_true.ravel().astype(np.int64, copy=False)
    label_pred = label_pred.ravel().astype(np.int64, copy=False)
    labelled = (label_true >= 0) & (label_true < n_class)
    label_true = label_true[labelled]
    label_pred = label_pred[labelled]
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
        return scores_from_confusion(self.hist)


def scores_from_confusion(hist):
    """Headline scores and per-class IoU of a confusion matrix (rows: truth, columns: prediction).

    Returns a dict with the :data:`SCORE_NAMES` (floats; NaN if no pixel is
    labelled) and ``class_iou`` (``{class index: IoU}``); see the module
    docstring for which classes enter the means.
    """
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {hist.shape}")
    n_class = hist.shape[0]
    total = hist.sum()
    diag = np.diag(hist)
    gt_count = hist.sum(axis=1)
    pred_count = hist.sum(axis=0)
    union = gt_count + pred_count - diag
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
        freq = gt_count / total
        fw_iou = float((freq[present] * iou[present]).sum())

    return {
        "pixel_accuracy": pixel_acc,
        "mean_accuracy": mean_acc,
        "mean_iou": mean_iou,
        "frequency_weighted_iou": fw_iou,
        "class_iou": {i: float(iou[i]) for i in range(n_class)},
    }


def scores(label_trues, label_preds, n_class):
    """Scores over lists of label maps (see :func:`scores_from_confusion`)."""
    if len(label_trues) != len(label_preds):
        raise ValueError(
            f"got {len(label_trues)} ground-truth maps but {len(label_preds)} predictions"
        )
    matrix = ConfusionMatrix(n_class)
    for label_true, label_pred in zip(label_trues, label_preds):
        matrix.update(label_true, label_pred)
    return matrix.scores()
