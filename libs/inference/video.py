"""Segmenting a camera or a video file frame by frame, for the window or a written video.

Each frame is resized so its longer side is ``longer_side`` for the network;
the label map comes back at the frame's own size, coloured and blended with
the frame, with the processing rate written in a corner. A window needs OpenCV
with GUI support (the ``opencv-python`` wheel; ``opencv-python-headless`` has
none) and a display; everything else runs anywhere.
"""

import contextlib
import re
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.errors import DeepLabError
from ..utils.visualize import colorize, display_available
from .predict import resize_longer_side, segment

WINDOW_NAME = "DeepLab v2 (q or Esc quits)"
QUIT_KEYS = (ord("q"), 27)  # 27 is Esc
LABEL_ALPHA = 0.5  # weight of the colour label map in the blend
FALLBACK_FPS = 30.0  # frame rate of the written video when the source does not report one
# Frames-per-second overlay.
TEXT_ORIGIN = (8, 24)
TEXT_SCALE = 0.7
TEXT_THICKNESS = 2
TEXT_OUTLINE = 4


class SourceError(DeepLabError, ValueError):
    """A camera or video that cannot be read; the message names it."""


# ------------------------------------------------------------------ input and window


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
    """An opened ``cv2.VideoCapture`` and its first frame, or :class:`SourceError`.

    Reading the first frame here turns a file OpenCV "opens" but cannot decode
    into the same one-line error as a file it refuses outright.
    """
    with quiet_opencv():
        if video is not None:
            return _open_video(Path(video))
        return _open_camera(camera_id)


def _open_video(path):
    if not path.is_file():
        raise SourceError(f"{path}: video file not found")
    return _first_frame(cv2.VideoCapture(str(path)),
                        f"{path}: cannot open video (unsupported format or corrupt file)",
                        f"{path}: no readable frame in the video (corrupt or empty file)")


def _open_camera(camera_id):
    return _first_frame(cv2.VideoCapture(int(camera_id)),
                        f"camera {camera_id}: no such camera or it cannot be opened "
                        "(check --camera-id, or use --video FILE)",
                        f"camera {camera_id}: opened but delivers no frames")


def _first_frame(capture, cannot_open, no_frame):
    """``(capture, first frame)``, or :class:`SourceError` with the matching message."""
    if not capture.isOpened():
        raise SourceError(cannot_open)
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise SourceError(no_frame)
    return capture, frame


def source_fps(capture):
    """The source's frame rate, or :data:`FALLBACK_FPS` when it reports none."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if fps > 0 else FALLBACK_FPS


def frames(capture, first_frame):
    """All frames of ``capture``, starting with the one already read."""
    frame = first_frame
    while frame is not None:
        yield frame
        ok, frame = capture.read()
        if not ok:
            return


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


# ------------------------------------------------------------------ per frame


def blend(frame_bgr, label_map, n_classes, alpha=LABEL_ALPHA):
    """The frame with its colour label map laid over it (same size as the frame)."""
    colours_bgr = colorize(label_map, n_classes)[:, :, ::-1]
    return cv2.addWeighted(frame_bgr, 1.0 - alpha, np.ascontiguousarray(colours_bgr), alpha, 0.0)


def draw_rate(frame_bgr, frames_per_second):
    """Write the processing rate in the top-left corner, white on a black outline."""
    text = f"{frames_per_second:.2f} fps"
    for colour, thickness in (((0, 0, 0), TEXT_OUTLINE), ((255, 255, 255), TEXT_THICKNESS)):
        cv2.putText(frame_bgr, text, TEXT_ORIGIN, cv2.FONT_HERSHEY_SIMPLEX, TEXT_SCALE, colour,
                    thickness, cv2.LINE_AA)
    return frame_bgr


def segment_frame(model, frame_bgr, longer_side, mean, device):
    """The frame's label map at the frame's own size; the network sees it at ``longer_side``."""
    small = resize_longer_side(frame_bgr, longer_side)
    _, label_map = segment(model, small, mean, device, output_size=frame_bgr.shape[:2])
    return label_map


class PointerReporter:
    """Mouse callback state: reports the class under the pointer whenever it changes.

    ``echo`` prints one line (the script passes ``click.echo``).
    """

    def __init__(self, class_names, echo):
        self.class_names = class_names
        self.label_map = None
        self.last = None
        self.echo = echo

    def __call__(self, event, x, y, flags, param):
        if self.label_map is None:
            return
        height, width = self.label_map.shape
        if not (0 <= x < width and 0 <= y < height):
            return
        class_id = int(self.label_map[y, x])
        if class_id != self.last:
            self.last = class_id
            self.echo(f"({x}, {y}): {self.class_names[class_id]}")


def expected_frames(capture, max_frames):
    """The number of frames to expect (for the progress bar), or None when unknown."""
    if max_frames is None and capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return max_frames


def run(model, device, capture, first_frame, *, longer_side, mean, class_names, echo,
        writer=None, window=False, max_frames=None, progress=False):
    """Segment, blend and emit frames until the source ends or ``q``/Esc; return (n, seconds).

    ``longer_side`` and ``mean`` are the config's ``IMAGE.SIZE.DEMO`` and
    ``IMAGE.MEAN``; ``echo`` prints the class under the mouse pointer in the window.
    """
    pointer = PointerReporter(class_names, echo)
    if window:
        cv2.setMouseCallback(WINDOW_NAME, pointer)
    n_frames = 0
    start = time.perf_counter()
    with tqdm(total=expected_frames(capture, max_frames), unit="frame", disable=not progress,
              dynamic_ncols=True) as bar:
        for frame in frames(capture, first_frame):
            tick = time.perf_counter()
            label_map = segment_frame(model, frame, longer_side, mean, device)
            blended = blend(frame, label_map, len(class_names))
            draw_rate(blended, 1.0 / max(time.perf_counter() - tick, 1e-9))
            if writer is not None:
                writer.write(blended)
            n_frames += 1
            bar.update(1)
            if window:
                pointer.label_map = label_map
                cv2.imshow(WINDOW_NAME, blended)
                if cv2.waitKey(1) & 0xFF in QUIT_KEYS:
                    break
            if max_frames is not None and n_frames >= max_frames:
                break
    return n_frames, time.perf_counter() - start
