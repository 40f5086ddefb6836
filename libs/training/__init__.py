"""The training stage: the DeepLab v2 protocol, one idea per module.

``optim`` (parameter groups, SGD), ``lr_policy`` (the poly schedule), ``loss``,
``step`` (one accumulated iteration), ``precision`` (autocast and the fp16
loss scaler), ``acceleration`` (channels-last layout, activation checkpointing,
``torch.compile``), ``stream`` (the endless batch stream), ``checkpoint``
(save, resume, initial weights), ``distributed`` (torchrun and model wrappers),
``tensorboard`` and ``monitor`` (what a run logs and shows: loss, rates,
images/s, peak memory), ``runlog`` (the start summary, ``train.log`` and
:func:`record_scores`, which takes the final scores as a plain dict),
``interrupt`` (SIGINT/SIGTERM/SIGHUP stop after an iteration with a
checkpoint), ``resume`` (what ``--resume`` checks), ``run_folder`` (no run is
overwritten by accident; ``--resume latest``) and ``loop`` (:func:`train`,
the entry point).
"""

from .errors import TrainingError
from .loop import train
from .runlog import record_scores

__all__ = ["TrainingError", "record_scores", "train"]
