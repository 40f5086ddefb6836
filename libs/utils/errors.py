"""The base class of every error this project raises for input it cannot use. Each subclass
carries a one-line message naming the file and the problem, which the command-line layer
(``libs/cli``) prints as is, so a new kind of bad input needs no change in any script.
"""


class DeepLabError(Exception):
    """Unusable input; ``str(error)`` is one line naming the file (or key) and the problem."""


def first_line(error, limit=None):
    """The first line of an exception's message (its type's name if it has none), for one-line
    reports of errors raised by other libraries (torch, ONNX, OpenCV), whose messages run long."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:limit] if limit else line


class OutputError(DeepLabError, ValueError):
    """An output path this project cannot write (unsupported format, or it would overwrite an input)."""


class DeviceError(DeepLabError, ValueError):
    """A requested device that this machine does not have."""
