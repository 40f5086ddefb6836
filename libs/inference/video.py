"""Segmenting a camera or a video file frame by frame, for the window or a written video.

Two profiles (:class:`Profile`): the default runs the multi-scale model on
frames whose longer side is ``IMAGE.SIZE.DEMO``; ``fast`` runs its
single-scale network (the MSC's ``.base``) on frames whose shorter side is
``IMAGE.SIZE.DEMO_FAST``. Neither runs a CRF. The label map comes back at the
frame's own size, coloured and blended with the frame, with the processing
rate written in a corner.

A live source (a camera, or a file read in real time) is read by a background
thread into a one-slot buffer (:class:`LatestFrame`): the loop always
segments the newest frame, and frames that arrive while the network is busy
are dropped and counted, never queued. A file is otherwise read in order,
every frame. A window needs OpenCV with GUI support (the ``opencv-python``
wheel; ``opencv-python-headless`` has none) and a display; everything else
runs anywhere.
"""

import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..models.geometry import model_geometry
from ..models.inference import prepare_for_inference
from ..utils.errors import DeepLabError
from ..utils.sizes import scaled_size
from ..utils.visualize import colorize, display_available
from .predict import dense_logits, load_model, network_input, resize_longer_side

WINDOW_NAME = "DeepLab v2 (q or Esc quits)"
QUIT_KEYS = (ord("q"), 27)  # 27 is Esc
LABEL_ALPHA = 0.5  # weight of the colour label map in the blend
FALLBACK_FPS = 30.0  # frame rate of the written video when the source does not report one
# Frames-per-second overlay.
TEXT_ORIGIN = (8, 24)
TEXT_SCALE = 0.7
TEXT_THICKNESS = 2
TEXT_OUTLINE = 4
READER_POLL_S = 0.1  # how often a consumer waiting for a frame checks for a stop
READER_JOIN_S = 2.0  # how long stopping waits for a reader blocked in capture.read()


class SourceError(DeepLabError, ValueError):
    """A camera or video that cannot be read; the message names it."""


# ------------------------------------------------------------------ profile and model


class Profile(NamedTuple):
    """Which network sees the frames and at what size; exactly one side is set."""

    name: str  # "fast" or "default"
    single_scale: bool  # the MSC's single-scale ``.base`` network instead of the MSC
    longer_side: int | None  # default: longer side of the network input (IMAGE.SIZE.DEMO)
    shorter_side: int | None  # fast: shorter side of the network input (IMAGE.SIZE.DEMO_FAST)
    precision: str | None  # prepare_for_inference's precision; None: the plain module

    @classmethod
    def from_config(cls, cfg, fast, precision="fp32"):
        if fast:
            return cls("fast", True, None, cfg.IMAGE.SIZE.DEMO_FAST, precision)
        return cls("default", False, cfg.IMAGE.SIZE.DEMO, None, precision)

    def describe(self, scales=()):
        """The start line's phrase, e.g. ``fast: single scale, shorter side 321, fp32, no CRF``."""
        net = ("single scale" if self.single_scale
               else "multi-scale (1" + "".join(f", {s:g}" for s in scales) + ")")
        side = (f"shorter side {self.shorter_side}" if self.shorter_side is not None
                else f"longer side {self.longer_side}")
        return f"{self.name}: {net}, {side}, {self.precision or 'fp32 unprepared'}, no CRF"


def load_profile_model(cfg, model_path, device, profile, log=print):
    """The network ``profile`` runs, in eval mode on ``device``.

    The config's model is loaded (:func:`load_model`); a single-scale profile
    takes out its ``.base`` network (the one the MSC runs on every scale)
    before it is prepared (:func:`prepare_for_inference`), so each frame gets
    exactly one pass and the prepared copy holds no MSC. It keeps the MSC's
    ``geometry`` (a released checkpoint's ``pytorch``), which decides how a
    frame is padded and its logits upsampled.
    """
    model = load_model(cfg, model_path, device, log=log)
    geometry = model_geometry(model)
    if profile.single_scale:
        model = model.base
    if profile.precision is not None:
        model = prepare_for_inference(model, profile.precision)
    model.geometry = geometry
    return model


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


class LatestFrame:
    """A one-slot frame buffer filled by a background reader thread.

    The reader puts every frame it reads into the slot, replacing a frame the
    consumer has not taken yet (counted in :attr:`n_dropped`); the consumer
    iterates and always gets the newest frame, so a slow network skips frames
    instead of falling behind. ``fps`` paces the reader at that rate (a video
    file read as if it were a camera); a camera is paced by its own
    ``read()``. Iteration ends after the last frame of the source; an error in
    the reader is raised in the consumer. Use it as a context manager: leaving
    the block (end, ``q``, Ctrl-C, an error) stops and joins the reader.
    """

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

    @property
    def running(self):
        return self._thread.is_alive()

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

    def get(self):
        """The newest frame not taken yet (waits for one); None once the source has ended."""
        with self._changed:
            while self._frame is None and not self._ended and not self._stop.is_set():
                self._changed.wait(READER_POLL_S)
            frame, self._frame = self._frame, None
        if frame is None and self._error is not None:
            raise self._error
        return frame

    def __iter__(self):
        while (frame := self.get()) is not None:
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


def resize_shorter_side(image, shorter_side):
    """Bilinear resize of an HxWx3 image so its shorter side is ``shorter_side``."""
    height, width = image.shape[:2]
    size = scaled_size((height, width), shorter_side / min(height, width))
    if size == (height, width):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def segment_frame(model, frame_bgr, longer_side, mean, device, shorter_side=None):
    """The frame's label map (HxW int64) at the frame's own size, as ``predict.segment``'s.

    The network sees the frame resized so its longer side is ``longer_side``,
    or, when ``shorter_side`` is given instead (``longer_side`` None), its
    shorter side is ``shorter_side``.
    """
    if (longer_side is None) == (shorter_side is None):
        raise ValueError("give exactly one of longer_side and shorter_side")
    small = (resize_longer_side(frame_bgr, longer_side) if shorter_side is None
             else resize_shorter_side(frame_bgr, shorter_side))
    # segment()'s logits with the argmax taken before its softmax (monotone: the same labels),
    # so no softmax over classes x frame pixels, and only the label map leaves the device.
    with torch.inference_mode():
        x = network_input(small, mean).to(device)
        logits = dense_logits(model, x, frame_bgr.shape[:2], model_geometry(model))
        return logits[0].argmax(0).cpu().numpy()


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


@dataclass
class RunStats:
    """What a run did so far; filled in place, so it is complete even after Ctrl-C."""

    shown: int = 0  # frames segmented (and written or shown)
    dropped: int = 0  # frames of a live source skipped because the network was busy
    start: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def summary(self):
        rate = f" ({self.shown / self.seconds:.2f} fps)" if self.seconds > 0 and self.shown else ""
        return f"{self.shown} frames shown, {self.dropped} dropped, in {self.seconds:.1f} s{rate}"


def run(model, device, capture, first_frame, *, profile, mean, class_names, echo,
        writer=None, window=False, max_frames=None, progress=False, live=False,
        pace_fps=None, stats=None):
    """Segment, blend and emit frames until the source ends or ``q``/Esc; return :class:`RunStats`.

    ``profile`` says which size the network sees (:class:`Profile`); ``mean``
    is the config's ``IMAGE.MEAN``; ``echo`` prints the class under the mouse
    pointer in the window. ``live`` reads the source in a background thread
    and always segments the newest frame (:class:`LatestFrame`; ``pace_fps``
    reads a file at that rate); otherwise every frame is segmented in order.
    Pass ``stats`` to keep the counts when an exception (Ctrl-C) ends the run.
    """
    stats = RunStats() if stats is None else stats
    stats.start = time.perf_counter()
    step = _FrameStep(model, device, profile, mean, class_names, echo, writer, window)
    total = None if live else expected_frames(capture, max_frames)
    reader = LatestFrame(capture, first_frame, pace_fps) if live else None
    try:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(reader) if live else frames(capture, first_frame)
            bar = stack.enter_context(tqdm(total=total, unit="frame", disable=not progress,
                                           dynamic_ncols=True))
            for frame in source:
                quit_asked = step(frame)
                stats.shown += 1
                bar.update(1)
                if quit_asked or (max_frames is not None and stats.shown >= max_frames):
                    break
    finally:
        stats.dropped = reader.n_dropped if live else 0
        stats.seconds = time.perf_counter() - stats.start
    return stats


class _FrameStep:
    """One frame through the network, the blend, the rate overlay, the writer and the window."""

    def __init__(self, model, device, profile, mean, class_names, echo, writer, window):
        self.model, self.device, self.profile, self.mean = model, device, profile, mean
        self.n_classes = len(class_names)
        self.writer, self.window = writer, window
        self.pointer = PointerReporter(class_names, echo)
        if window:
            cv2.setMouseCallback(WINDOW_NAME, self.pointer)

    def __call__(self, frame):
        """Process ``frame``; True when ``q`` or Esc was pressed in the window."""
        tick = time.perf_counter()
        label_map = segment_frame(self.model, frame, self.profile.longer_side, self.mean,
                                  self.device, shorter_side=self.profile.shorter_side)
        blended = blend(frame, label_map, self.n_classes)
        draw_rate(blended, 1.0 / max(time.perf_counter() - tick, 1e-9))
        if self.writer is not None:
            self.writer.write(blended)
        if not self.window:
            return False
        self.pointer.label_map = label_map
        cv2.imshow(WINDOW_NAME, blended)
        return (cv2.waitKey(1) & 0xFF) in QUIT_KEYS
