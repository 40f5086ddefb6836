"""The one way this project writes files: atomically, so a crash never leaves half a file.

Every writer (torch files, JSON, raw bytes, figures, videos) goes through :func:`atomic_path`: the
data goes to a temporary file beside the target, renamed onto it only when writing succeeded, and
the folder is then fsynced so a power loss cannot lose the published name. On any error the
temporary is removed and an existing target is untouched; an ``OSError`` (a full disk, a read-only
folder) becomes one :class:`OutputError` line naming the target. The temporaries of a process
killed mid-write are removed later by :func:`remove_stale_temporaries`. Input files are read
with one clear error (:func:`read_input`), and output locations are checked before any work starts.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .errors import OutputError, first_line

# How torch reports a weight file it cannot read or write (RuntimeErrors of its zip code; a full
# disk: "[enforce fail at inline_container.cc:...] unexpected pos 4416 vs 4310").
TORCH_FILE_ERRORS = ("unexpected pos", "PytorchStreamWriter", "PytorchStreamReader",
                     "file write failed")
# The temporaries left by a killed writer: atomic_path's ".<stem>.<8 random>.tmp<suffix>"
# files and the synthetic generator's ".<name>.tmp-<8 random>" / ".<name>.old-<8 random>"
# folders (tempfile's random names are 8 characters of [a-z0-9_]).
TEMPORARY_FILE = re.compile(r"^\..*\.[a-z0-9_]{8}\.tmp(\.[^./]+)?$")
TEMPORARY_DIR = re.compile(r"^\..+\.(tmp|old)-[a-z0-9_]{8}$")
STARTED = time.time()  # a temporary last changed before this is no live writer's

# Writable video containers and the codec each gets (both are in every OpenCV build with FFMPEG).
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def current_umask():
    """The process's umask (read from /proc on Linux; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(directory=False):
    """The mode a plain ``open``/``mkdir`` would give: 0o666 or 0o777 without the umask's bits.
    ``tempfile.mkstemp``/``mkdtemp`` create 0o600/0o700 and the rename keeps that, so without
    this every result on a shared server would be readable by its writer only."""
    return (0o777 if directory else 0o666) & ~current_umask()


def read_input(path, what, error_type, binary=False):
    """The bytes (or text) of ``path``, or an ``error_type`` naming the file and ``what`` it is:
    "<path>: image file not found", "<path>: cannot read config file (Permission denied)"."""
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
    """Raise :class:`OutputError` when ``output`` is one of ``inputs`` ({what: path}), before any
    work: ``demo.py -o photo.jpg --image-path photo.jpg`` stops instead of replacing the photo."""
    for what, path in inputs.items():
        if path is not None and same_file(output, path):
            raise OutputError(f"{output}: this is the input {what}; choose another {option}")


def os_reason(error):
    """The words for an ``OSError`` in a one-line message. ``mkdir`` over a regular file says
    "File exists", as if the folder were there; the user reads "Not a directory"."""
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
    writers give (:func:`write_error`): "<path>: cannot write (Not a directory)"."""
    _check_can_create_in(Path(path).parent, f"{Path(path)}: cannot write")


def write_error(path, error):
    """The one-line :class:`OutputError` for an ``OSError`` met while writing ``path``."""
    reason = os_reason(error) if error.strerror else first_line(error)
    return OutputError(f"{path}: cannot write ({reason})")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (:data:`TEMPORARY_FILE` names it); rename it onto
    ``path`` if the block succeeds. The temporary keeps ``path``'s suffix, so writers that pick a
    format from the extension (matplotlib, OpenCV) behave as for ``path`` itself."""
    path = Path(path)
    tmp = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                       dir=path.parent)
            os.close(fd)
            os.chmod(tmp, umask_mode())
            yield Path(tmp)
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(path, e) from None
        with contextlib.suppress(OSError):  # the rename, to disk (Windows cannot open a folder)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _write_flushed(path, write):
    """``write(f)`` into a binary file at ``path``, atomically, flushed to disk before renaming."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_bytes(data, path):
    """Write ``data`` to ``path`` atomically."""
    return _write_flushed(path, lambda f: f.write(data))


def write_json(obj, path):
    """``obj`` as indented JSON (NaN refused: it is not JSON) to ``path``, atomically."""
    return write_bytes((json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8"), path)


def save_torch(obj, path):
    """``torch.save`` ``obj`` to ``path`` atomically (checkpoints, converted weights)."""
    import torch  # only the writers of weight files need it

    def write(f):
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # a failed write inside torch's zip writer
            if not any(mark in str(e) for mark in TORCH_FILE_ERRORS):
                raise
            raise OutputError(f"{path}: cannot write (torch: {first_line(e, 120)}; "
                              "is the disk full?)") from None

    return _write_flushed(path, write)


def publish_link(source, path):
    """Make ``path`` name the same file as ``source`` (a hard link: one copy of a 450 MB
    checkpoint instead of two), atomically; copied where the file system has no hard links."""
    with atomic_path(path) as tmp:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    return Path(path)


def _suffix(path, what, supported):
    """``path``'s suffix in lower case, or an :class:`OutputError` when ``supported`` lacks it."""
    path = Path(path)
    if path.suffix.lower() not in supported:
        raise OutputError(f"{path}: unsupported {what} format {path.suffix!r}; "
                          f"use one of {', '.join(sorted(supported))}")
    return path.suffix.lower()


def figure_format(path):
    """The matplotlib format named by ``path``'s suffix, or :class:`OutputError`."""
    from matplotlib.backend_bases import FigureCanvasBase

    supported = {"." + name for name in FigureCanvasBase.get_supported_filetypes()}
    return _suffix(path, "figure", supported)[1:]


def save_figure(figure, path, dpi):
    """Write a matplotlib ``figure`` to ``path`` atomically; the format follows the suffix."""
    fmt = figure_format(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi)
    return Path(path)


def video_codec(path):
    """The codec for ``path``'s suffix (see :data:`VIDEO_CODECS`), or :class:`OutputError`."""
    return VIDEO_CODECS[_suffix(path, "video", VIDEO_CODECS)]


def remove_stale_temporaries(folder, suffixes=None):
    """Delete the temporaries (:data:`TEMPORARY_FILE`/:data:`TEMPORARY_DIR` names) in ``folder``
    (not below) last changed before this process imported this module, so another run writing
    there now keeps its files; return the paths removed. ``suffixes`` (e.g. ``(".json",)``) limits
    it to those files': eval clears its results' leftovers but not a checkpoint being fsynced."""
    endings = None if suffixes is None else tuple(f".tmp{suffix}" for suffix in suffixes)
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        is_dir = entry.is_dir() and not entry.is_symlink()
        if endings is not None and (is_dir or not entry.name.endswith(endings)):
            continue
        if not (TEMPORARY_DIR if is_dir else TEMPORARY_FILE).match(entry.name):
            continue
        try:
            # The newest change in it (a folder: anywhere below), so a folder another process is
            # still filling counts as new; an entry vanishing meanwhile raises OSError: skipped.
            below = entry.rglob("*") if is_dir else ()
            if max([entry.lstat().st_mtime] + [e.lstat().st_mtime for e in below]) >= STARTED:
                continue
            shutil.rmtree(entry) if is_dir else entry.unlink()
        except OSError:
            continue  # gone already, or not ours to remove
        removed.append(entry)
    return removed
