"""The kinds of problem this project reports, one class each, all in this module.

Every one carries a one-line message naming the file (or key, or option) and
the problem; the command-line layer (``libs/cli``) prints that line, so a new
kind of bad input needs no change in any script. A stop signal during
training is not an error: :class:`~libs.training.interrupt.TrainingInterrupted`.
"""


class DeepLabError(Exception):
    """Unusable input; ``str(error)`` is one line naming the file (or key) and the problem."""


class ConfigError(DeepLabError, ValueError):
    """A config file, value or command-line setting that cannot be used on this machine.

    Errors found while a file is read name the file. A value that passed the
    schema but that a stage cannot use (an unknown ``MODEL.NAME``, fp16 on a
    CPU) is raised later with ``loaded=True``: its message names the key, and
    the command line adds the file it was read from.
    """

    def __init__(self, message, loaded=False):
        super().__init__(message)
        self.loaded = loaded


class DatasetError(DeepLabError, ValueError):
    """A dataset file, image or video source that cannot be read or used."""


class CheckpointError(DeepLabError, ValueError):
    """A weight file (checkpoint, caffemodel, ONNX model) that cannot be read, or that does not
    fit the config, or a checkpoint that cannot be resumed as asked."""


class OutputError(DeepLabError, ValueError):
    """An output path this project cannot or must not write (a format it cannot write, an
    input it would overwrite, a run folder that holds another run)."""


class ConversionError(DeepLabError, ValueError):
    """A conversion (caffemodel to PyTorch, PyTorch to ONNX) whose result would be wrong."""


class TrainingError(DeepLabError, FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration."""


def first_line(error, limit=None):
    """The first line of an exception's message (its type's name if it has none), for one-line
    reports of errors raised by other libraries (torch, ONNX, OpenCV), whose messages run long."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:limit] if limit else line
