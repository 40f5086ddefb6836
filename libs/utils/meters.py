"""Running statistics for logging (replaces torchnet's meters, which no longer install)."""

from collections import deque


class MovingAverage:
    """Mean of the last ``window`` values: Caffe's ``average_loss`` display."""

    def __init__(self, window):
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.values = deque(maxlen=window)

    def add(self, value):
        self.values.append(float(value))

    @property
    def value(self):
        if not self.values:
            raise ValueError("no values added yet")
        return sum(self.values) / len(self.values)
