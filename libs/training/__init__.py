"""The training stage: the DeepLab v2 protocol, one idea per module.

``optim`` (parameter groups, SGD), ``lr_policy`` (the poly schedule), ``loss``,
``step`` (one accumulated iteration), ``stream`` (the endless batch stream),
``checkpoint`` (save, resume, initial weights), ``distributed`` (torchrun and
model wrappers), ``tensorboard`` (what a run logs) and ``loop`` (:func:`train`,
the entry point).
"""

from .errors import TrainingError
from .loop import train

__all__ = ["TrainingError", "train"]
