"""The error that stops a training run which can no longer make progress."""

from ..utils.errors import DeepLabError


class TrainingError(DeepLabError, FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration.

    It is still a ``FloatingPointError``, as the stop was before it became a
    project error, so older callers that catch that keep working.
    """
