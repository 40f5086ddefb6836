"""Running statistics for logging (replaces torchnet's meters, which no longer install)."""

from collections import deque

# The headline segmentation scores: results-JSON key -> printed name, in the order of the
# README's tables. Evaluation computes them; training logs them (train.log, eval/<key> scalars).
SCORE_LABELS = {"pixel_accuracy": "Pixel Accuracy", "mean_accuracy": "Mean Accuracy",
                "mean_iou": "Mean IoU", "frequency_weighted_iou": "Frequency Weighted IoU"}


class MovingAverage:
    """Mean of the last ``window`` values: Caffe's ``average_loss`` display."""

    def __init__(self, window):
        self.values = deque(maxlen=window)  # SOLVER.AVERAGE_LOSS, >= 1 (config_ranges.py)

    def add(self, value):
        self.values.append(float(value))

    @property
    def value(self):
        return sum(self.values) / len(self.values)
