"""The base class of every error this project raises for input it cannot use.

Each subclass (a bad config, dataset file, weight file, caffemodel, output
path, video source ...) carries a one-line message that names the file and the
problem. The command-line layer (``libs/cli``) turns every ``DeepLabError``
into that one line, so a new kind of bad input needs no change in any script.
"""


class DeepLabError(Exception):
    """Unusable input; ``str(error)`` is one line naming the file (or key) and the problem."""


class OutputError(DeepLabError, ValueError):
    """An output path this project cannot write (unsupported format, or it would overwrite an input)."""


class DeviceError(DeepLabError, ValueError):
    """A requested device that this machine does not have."""
