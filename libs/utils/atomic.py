"""The one way this project writes files: atomically, so a crash never leaves half a file.

Every writer goes through :func:`atomic_path`: the data goes to a temporary file
beside the target, which is renamed onto the target only when writing succeeded.
On any error the temporary file is removed and an existing target is untouched.
Torch files, JSON, raw bytes (caffemodels), figures and videos all use it.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .errors import OutputError

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

    ``tempfile.mkstemp``/``mkdtemp`` create 0o600/0o700 for privacy, and the
    rename keeps that mode, so without this every result on a shared server
    would be readable by its writer only.
    """
    return (0o777 if directory else 0o666) & ~current_umask()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix, so writers that pick a format
    from the extension (matplotlib, OpenCV) behave as for ``path`` itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, umask_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(data, path):
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def save_torch(obj, path):
    """``torch.save`` ``obj`` to ``path`` atomically (checkpoints, converted weights)."""
    import torch  # only the writers of weight files need it

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def publish_link(source, path):
    """Make ``path`` name the same file as ``source`` (a hard link), atomically.

    One copy of a 450 MB checkpoint instead of two; where the file system has
    no hard links, ``source`` is copied (still atomically).
    """
    import shutil

    with atomic_path(path) as tmp:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    return Path(path)


def write_json(obj, path):
    """``obj`` as indented JSON (NaN refused: it is not JSON) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    return Path(path)


def figure_format(path):
    """The matplotlib format named by ``path``'s suffix, or :class:`OutputError`."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise OutputError(f"{path}: unsupported figure format {path.suffix!r}; "
                          f"use one of {', '.join('.' + k for k in sorted(supported))}")
    return fmt


def save_figure(figure, path, dpi):
    """Write a matplotlib ``figure`` to ``path`` atomically; the format follows the suffix."""
    fmt = figure_format(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi)
    return Path(path)


def video_codec(path):
    """The codec for ``path``'s suffix (see :data:`VIDEO_CODECS`), or :class:`OutputError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_CODECS:
        raise OutputError(f"{path}: unsupported video format {path.suffix!r}; "
                          f"use one of {', '.join(sorted(VIDEO_CODECS))}")
    return VIDEO_CODECS[suffix]


class AtomicVideoWriter:
    """A ``cv2.VideoWriter`` on a temporary file that is renamed to ``path`` on :meth:`close`.

    Whatever was written before an interruption (Ctrl-C, a camera unplugged)
    is still finalised into a playable file; an output with no frame at all is
    discarded rather than left as an empty file.
    """

    def __init__(self, path, fps, frame_size):
        import cv2

        self.path = Path(path)
        codec = video_codec(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.",
                                   suffix=f".tmp{self.path.suffix}", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        width, height = frame_size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*codec),
                                      float(fps), (int(width), int(height)))
        if not self.writer.isOpened():
            self._discard()
            raise OutputError(f"{self.path}: OpenCV cannot write this video (codec {codec})")
        self.n_frames = 0

    def write(self, frame):
        self.writer.write(frame)
        self.n_frames += 1

    def close(self):
        """Finalise and move into place; returns the number of frames written."""
        self.writer.release()
        if self.n_frames:
            os.replace(self.tmp, self.path)
        else:
            self._discard()
        return self.n_frames

    def _discard(self):
        if self.tmp.exists():
            self.tmp.unlink()
