"""Reading an input file with one clear error when it is missing or unreadable."""

from pathlib import Path


def read_input(path, what, error_type, binary=False):
    """The bytes (or text) of ``path``; ``error_type`` naming the file and ``what`` it is otherwise.

    ``what`` is the kind of file as the user knows it ("config file", "image
    file"), so the message reads "<path>: image file not found" or
    "<path>: cannot read image file (Permission denied)".
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
