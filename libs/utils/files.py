"""Input files read with one clear error; output locations checked before any work starts."""

import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputError


def read_input(path, what, error_type, binary=False):
    """The bytes (or text) of ``path``, or an ``error_type`` naming the file and ``what`` it is to
    the user: "<path>: image file not found", "<path>: cannot read config file (Permission denied)".
    """
    path = Path(path)
    try:
        return path.read_bytes() if binary else path.read_text()
    except FileNotFoundError:
        raise error_type(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error_type(f"{path}: {what} expected, found a directory") from None
    except OSError as e:
        raise error_type(f"{path}: cannot read {what} ({e.strerror})") from None
    except UnicodeDecodeError:
        raise error_type(f"{path}: cannot read {what} (not UTF-8 text)") from None


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file: the same existing file (through links, hard
    links and ``..``), or, where one does not exist yet, the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one is missing: two names of one file about to be written are still one
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwriting_inputs(output, inputs, option="--output"):
    """Raise :class:`OutputError` when ``output`` is one of ``inputs`` (``{what: path}``); every
    script calls this before it computes anything, so ``demo.py -o photo.jpg --image-path
    photo.jpg`` stops with one line instead of replacing the photo."""
    for what, path in inputs.items():
        if path is not None and same_file(output, path):
            raise OutputError(f"{output}: this is the input {what}; choose another {option}")


def os_reason(error):
    """The words for an ``OSError`` in a one-line message ("Permission denied"). ``mkdir`` over a
    regular file says "File exists", as if the folder were there; the user reads "Not a directory".
    """
    if isinstance(error, FileExistsError):
        return os.strerror(errno.ENOTDIR)
    return error.strerror or type(error).__name__


def _check_can_create_in(folder, message):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputError(f"{message} ({os_reason(e)})") from None


def check_writable_dir(folder, what):
    """Create ``folder`` if needed and check that a file can be created in it, at start: a run that
    would fail hours later at its first checkpoint fails now with one line."""
    _check_can_create_in(Path(folder), f"{Path(folder)}: cannot write {what} there")


def check_writable_output(path):
    """Like :func:`check_writable_dir` for the folder of the file ``path``, with the line the
    writers give (``libs.utils.atomic.write_error``): "<path>: cannot write (Not a directory)"."""
    _check_can_create_in(Path(path).parent, f"{Path(path)}: cannot write")
