import math

import numpy as np
import pytest

from libs.inference.metric import ConfusionMatrix, confusion_matrix


def scores(label_trues, label_preds, n_class):
    """Scores over lists of label maps (see :meth:`ConfusionMatrix.scores`)."""
    if len(label_trues) != len(label_preds):
        raise ValueError(
            f"got {len(label_trues)} ground-truth maps but {len(label_preds)} predictions"
        )
    matrix = ConfusionMatrix(n_class)
    for label_true, label_pred in zip(label_trues, label_preds):
        matrix.update(label_true, label_pred)
    return matrix.scores()


def test_unequal_class_frequencies_hand_computed():
    # truth [0,0,0,1], prediction [0,0,1,1] -> confusion [[2,1],[0,1]]
    result = scores([np.array([[0, 0], [0, 1]])], [np.array([[0, 0], [1, 1]])], 2)
    assert result["pixel_accuracy"] == pytest.approx(3 / 4)
    assert result["mean_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["class_iou"] == pytest.approx({0: 2 / 3, 1: 1 / 2})
    assert result["mean_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result["frequency_weighted_iou"] == pytest.approx(3 / 4 * 2 / 3 + 1 / 4 * 1 / 2)


def test_ignore_pixels_and_absent_classes():
    # Class 3 is only predicted, class 4 appears nowhere, 255 and -1 are ignored.
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, -1]])
    pred = np.array([[0, 1, 1, 1], [2, 3, 0, 3]])
    hist = confusion_matrix(truth, pred, 5)
    expected = np.zeros((5, 5), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[2, 2] = expected[2, 3] = 1
    expected[1, 1] = 2
    np.testing.assert_array_equal(hist, expected)

    result = scores([truth], [pred], 5)
    assert result["pixel_accuracy"] == pytest.approx(4 / 6)
    assert result["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    iou = result["class_iou"]
    assert iou[0] == pytest.approx(1 / 2)
    assert iou[1] == pytest.approx(2 / 3)
    assert iou[2] == pytest.approx(1 / 2)
    assert iou[3] == 0.0  # predicted but never in the ground truth
    assert math.isnan(iou[4])  # absent from both
    # Means run over the classes present in the ground truth only (0, 1, 2).
    assert result["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert result["frequency_weighted_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)


def test_accumulator_equals_scores_over_list():
    rng = np.random.default_rng(0)
    truths = [rng.integers(0, 6, size=(7, 9)) for _ in range(4)]
    preds = [rng.integers(0, 6, size=(7, 9)) for _ in range(4)]
    truths[1][2:4] = 255
    matrix = ConfusionMatrix(6)
    for t, p in zip(truths, preds):
        matrix.update(t, p)
    assert matrix.hist.sum() == sum((t != 255).sum() for t in truths)
    from_list = scores(truths, preds, 6)
    from_matrix = matrix.scores()
    concatenated = scores([np.concatenate(truths)], [np.concatenate(preds)], 6)
    for name in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert from_list[name] == from_matrix[name] == pytest.approx(concatenated[name])


def test_perfect_prediction_scores_one():
    truth = np.array([[0, 1], [2, 2]])
    result = scores([truth], [truth.copy()], 3)
    for name in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert result[name] == pytest.approx(1.0)


def test_no_labelled_pixel_gives_nan_without_warning():
    with np.errstate(all="raise"):
        result = ConfusionMatrix(3).scores()
    assert math.isnan(result["pixel_accuracy"]) and math.isnan(result["mean_iou"])


def test_shape_mismatch_and_bad_prediction_are_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="predicted label 7"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 7), 3)
    with pytest.raises(ValueError, match="2 ground-truth maps but 1"):
        scores([np.zeros((2, 2))] * 2, [np.zeros((2, 2))], 3)
