"""The training stage: the DeepLab v2 protocol. ``loop`` (:func:`train`, and
:func:`~.loop.update`, one weight update on one screen) uses every other module."""

from .loop import Launch, train
from .runlog import record_scores
