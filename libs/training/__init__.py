"""The training stage: the DeepLab v2 protocol.

``loop`` (:func:`train`, and :func:`~.loop.update`, one weight update on one
screen), ``optim`` (parameter groups, SGD), ``loss``, ``acceleration`` (mixed
precision, channels-last, activation checkpointing, ``torch.compile``),
``checkpoint`` (save, resume, initial weights), ``resume`` (what ``--resume``
checks), ``run_folder`` (no run is overwritten by accident; ``--resume
latest``), ``interrupt`` (SIGINT/SIGTERM/SIGHUP stop after an iteration with a
checkpoint), ``distributed`` (torchrun and model wrappers), ``runlog`` (the
summary, ``train.log``, the bar and scalars, :func:`record_scores`) and
``tensorboard`` (the image panel, the config and the scores).
"""

from .errors import TrainingError
from .loop import Launch, train
from .runlog import record_scores

__all__ = ["Launch", "TrainingError", "record_scores", "train"]
