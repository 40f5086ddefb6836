"""Reading and writing video for uvcdemo.py: the source, the live buffer, the window, the output.

The frames are segmented by :mod:`.frame_loop`. OpenCV's writer fails silently, so the written
video is checked frame by frame and read back before it is published (:func:`video_output`).
"""

import contextlib
import re
import shutil
import threading
import time
from pathlib import Path

import cv2

from ..utils.atomic import atomic_path, video_codec
from ..utils.errors import DatasetError, OutputError
from ..utils.visualize import display_available

WINDOW_NAME = "DeepLab v2 (q or Esc quits)"
FALLBACK_FPS = 30.0  # frame rate of the written video when the source does not report one
READER_POLL_S = 0.1  # how often a consumer waiting for a frame checks for a stop
READER_JOIN_S = 2.0  # how long stopping waits for a reader blocked in capture.read()


@contextlib.contextmanager
def quiet_opencv():
    """Silence OpenCV's own warnings (a missing camera logs several), keep its errors."""
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def open_source(camera_id=0, video=None):
    """An opened ``cv2.VideoCapture`` and its first frame, or :class:`DatasetError`: reading it
    here gives a file OpenCV "opens" but cannot decode the one-line error of a refused one."""
    if video is None:
        source = int(camera_id)
        cannot_open = (f"camera {camera_id}: no such camera or it cannot be opened "
                       "(check --camera-id, or use --video FILE)")
        no_frame = f"camera {camera_id}: opened but delivers no frames"
    else:
        path = Path(video)
        if not path.is_file():
            raise DatasetError(f"{path}: video file not found")
        source = str(path)
        cannot_open = f"{path}: cannot open video (unsupported format or corrupt file)"
        no_frame = f"{path}: no readable frame in the video (corrupt or empty file)"
    with quiet_opencv():
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise DatasetError(cannot_open)
        ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise DatasetError(no_frame)
    return capture, frame


def source_fps(capture):
    """The source's frame rate, or :data:`FALLBACK_FPS` when it reports none."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if fps > 0 else FALLBACK_FPS


def frames(capture, first_frame):
    """All frames of ``capture``, starting with the one already read."""
    ok, frame = True, first_frame
    while ok and frame is not None:
        yield frame
        ok, frame = capture.read()


class LatestFrame:
    """A one-slot frame buffer filled by a background reader thread, so a slow network skips
    frames (:attr:`n_dropped`) instead of falling behind a live source. ``fps`` paces the reader;
    its error is raised in the consumer; leaving the ``with`` block stops it."""

    def __init__(self, capture, first_frame, fps=None):
        self.capture = capture
        self.interval = None if fps is None else 1.0 / fps
        self.n_read = 1  # ``first_frame`` is the first
        self.n_dropped = 0
        self._frame = first_frame
        self._ended = False
        self._error = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read_all, name="frame-reader", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _read_all(self):
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                if self.interval is not None:
                    delay = start + self.n_read * self.interval - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                ok, frame = self.capture.read()
                if not ok or frame is None:
                    break
                with self._changed:
                    self.n_dropped += self._frame is not None
                    self._frame = frame
                    self.n_read += 1
                    self._changed.notify_all()
        except Exception as error:  # handed over: raised in the consumer
            self._error = error
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def __iter__(self):
        """The newest frame not taken yet (waiting for one), until the source ends."""
        while True:
            with self._changed:
                while self._frame is None and not self._ended and not self._stop.is_set():
                    self._changed.wait(READER_POLL_S)
                frame, self._frame = self._frame, None
            if frame is None:
                if self._error is not None:
                    raise self._error
                return
            yield frame

    def stop(self):
        """Stop the reader and wait for it (at most :data:`READER_JOIN_S` if a read blocks)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(READER_JOIN_S)


def opencv_has_gui():
    """Whether this OpenCV build can open windows (``GUI: NONE`` in headless wheels)."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return match is not None and match.group(1).upper() != "NONE"


def open_window():
    """Open the demo window; False when OpenCV cannot (no GUI backend or no display)."""
    if not (opencv_has_gui() and display_available()):
        return False
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        return False
    return True


def no_window_reason():
    """Why :func:`open_window` could not open one, for the error message."""
    if not opencv_has_gui():
        return ("this OpenCV build has no GUI support (install opencv-python instead of "
                "opencv-python-headless)")
    return "no display available (DISPLAY is not set)"


class CheckedVideoWriter:
    """A ``cv2.VideoWriter`` whose every write is checked (writer open, room for a raw frame)
    and whose file :meth:`finish` reads back; a failure is a :class:`OutputError` naming
    ``path`` (the user's file; the data goes to ``tmp``)."""

    def __init__(self, tmp, path, fps, frame_size):
        self.tmp, self.path = Path(tmp), Path(path)
        codec = video_codec(self.path)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*codec), float(fps),
                                      tuple(int(side) for side in frame_size))
        if not self.writer.isOpened():
            raise OutputError(f"{self.path}: OpenCV cannot write this video (codec {codec})")
        self.n_frames = 0

    def write(self, frame):
        if not self.writer.isOpened():
            self.fail("the video writer closed")
        free = shutil.disk_usage(self.tmp.parent).free
        if free < frame.nbytes:
            self.fail(f"disk full ({free} bytes left for a {frame.nbytes}-byte frame)")
        with quiet_opencv():  # a failed write is reported below, not as OpenCV's warning
            self.writer.write(frame)
        self.n_frames += 1

    def fail(self, reason):
        raise OutputError(f"{self.path}: {reason} after {self.n_frames} frames; "
                              "the partial video is not kept")

    def release(self):
        with quiet_opencv():
            self.writer.release()

    def finish(self):
        """Close the file and check that it holds every frame written."""
        self.release()
        held = frames_in_file(self.tmp)
        if held != self.n_frames:
            raise OutputError(f"{self.path}: {self.n_frames} frames written but the file "
                                  f"holds {held} (disk full or write error); "
                                  "the partial video is not kept")


def frames_in_file(path):
    """The frame count a closed video file reports (0 when OpenCV cannot open it)."""
    with quiet_opencv():
        capture = cv2.VideoCapture(str(path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
    return count


@contextlib.contextmanager
def video_output(path, fps, frame_size):
    """Yield a :class:`CheckedVideoWriter` on a temporary file, published as ``path`` at the end.

    Another error (Ctrl-C, a camera unplugged) still publishes the frames written, then goes on;
    a :class:`OutputError`, or an error before any frame, publishes nothing."""
    error = None
    with atomic_path(path) as tmp:
        writer = CheckedVideoWriter(tmp, path, fps, frame_size)
        try:
            yield writer
        except (Exception, KeyboardInterrupt) as e:
            error = e
        if isinstance(error, OutputError) or (error is not None and writer.n_frames == 0):
            writer.release()
            raise error  # inside atomic_path: the temporary file is removed
        writer.finish()
    if error is not None:
        raise error
