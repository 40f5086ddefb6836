"""The errors that stop a training run: no more progress, or a setting this machine cannot run."""

from ..utils.config import ConfigValueError
from ..utils.errors import DeepLabError


class TrainingError(DeepLabError, FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration."""


class TrainingConfigError(TrainingError, ConfigValueError):
    """A ``SOLVER`` setting this machine cannot train with (fp16 on a CPU, say); a
    :class:`ConfigValueError`, so the command line prefixes its one line with the config file."""
