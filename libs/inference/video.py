"""Segmenting a camera or a video file frame by frame, for the window or a written video.

Two profiles (:class:`Profile`): the default runs the multi-scale model on
frames whose longer side is ``IMAGE.SIZE.DEMO``; ``fast`` runs its
single-scale network (the MSC's ``.base``) on frames whose shorter side is
``IMAGE.SIZE.DEMO_FAST``. Neither runs a CRF. The label map comes back at the
frame's own size, coloured and blended with the frame, with the processing
rate written in the top-left corner and a legend of the classes in the frame
(largest first, exactly the colours of the overlay) in the top-right one, both
drawn with OpenCV at a size that follows the frame's (``utils.visualize``).

A live source (a camera, or a file read in real time) is read by a background
thread into a one-slot buffer (:class:`LatestFrame`): the loop always
segments the newest frame, and frames that arrive while the network is busy
are dropped and counted, never queued. A file is otherwise read in order,
every frame. A window needs OpenCV with GUI support (the ``opencv-python``
wheel; ``opencv-python-headless`` has none) and a display; everything else
runs anywhere.

The written video (:func:`video_output`) goes to a temporary file that is
published only when every frame was written: each write is checked (the
writer still open, room left on the disk for another frame) and at the end the
file is read back and must hold exactly the frames written; otherwise a
:class:`VideoWriteError` says so and the partial file is removed.
"""

import contextlib
import re
import shutil
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
from ..models.prepared import prepare_for_inference
from ..utils.atomic import atomic_path, video_codec
from ..utils.errors import DeepLabError, OutputError
from ..utils.sizes import scaled_size
from ..utils.visualize import (colorize, display_available, draw_legend, legend_entries, palette,
                               put_outlined_text, text_style)
from .predict import dense_logits, load_model, network_input, resize_longer_side

WINDOW_NAME = "DeepLab v2 (q or Esc quits)"
QUIT_KEYS = (ord("q"), 27)  # 27 is Esc
LABEL_ALPHA = 0.5  # weight of the colour label map in the blend
FALLBACK_FPS = 30.0  # frame rate of the written video when the source does not report one
READER_POLL_S = 0.1  # how often a consumer waiting for a frame checks for a stop
READER_JOIN_S = 2.0  # how long stopping waits for a reader blocked in capture.read()


class SourceError(DeepLabError, ValueError):
    """A camera or video that cannot be read; the message names it."""


class VideoWriteError(OutputError):
    """A frame that did not reach the output video (disk full, writer failed); nothing is published."""


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


def draw_rate(frame_bgr, frames_per_second, style=None):
    """Write the processing rate in the top-left corner, white on a black outline.

    ``style`` (default: :func:`~libs.utils.visualize.text_style` of the frame)
    makes the text a fixed share of the frame's shorter side.
    """
    style = text_style(*frame_bgr.shape[:2]) if style is None else style
    origin = (style.margin, style.margin + style.text_height)
    return put_outlined_text(frame_bgr, f"{frames_per_second:.2f} fps", origin, style)


def draw_frame_legend(frame_bgr, label_map, class_names, colours_bgr, style=None):
    """The legend of the classes visible in ``label_map`` in the frame's top-right corner.

    Largest area first, at most ``LEGEND_ROWS`` rows (the last one ``+N more``),
    each swatch exactly the class's overlay colour (``colours_bgr``: the palette
    in BGR). Returns the legend's box ``(x0, y0, x1, y1)``, or None on a frame
    too small for one.
    """
    style = text_style(*frame_bgr.shape[:2]) if style is None else style
    entries = legend_entries(label_map, class_names, colours_bgr)
    return draw_legend(frame_bgr, entries, style, right=True)


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
        self.class_names = class_names
        self.colours_bgr = palette(self.n_classes)[:, ::-1]
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
        style = text_style(*blended.shape[:2])
        draw_frame_legend(blended, label_map, self.class_names, self.colours_bgr, style)
        draw_rate(blended, 1.0 / max(time.perf_counter() - tick, 1e-9), style)
        if self.writer is not None:
            self.writer.write(blended)
        if not self.window:
            return False
        self.pointer.label_map = label_map
        cv2.imshow(WINDOW_NAME, blended)
        return (cv2.waitKey(1) & 0xFF) in QUIT_KEYS


# ------------------------------------------------------------------ the written video


class CheckedVideoWriter:
    """A ``cv2.VideoWriter`` whose every write is checked; :attr:`n_frames` counts the frames written.

    ``cv2.VideoWriter.write`` returns nothing and fails silently (a full disk
    left 26 frames in a file reported as 60), so before each frame the writer
    must still be open and the disk must have room for at least one raw frame,
    and :meth:`finish` reads the closed file back: it must hold exactly
    :attr:`n_frames` frames. Any failure is a :class:`VideoWriteError` naming
    ``path`` (the file the user asked for; the data goes to ``tmp``).
    """

    def __init__(self, tmp, path, fps, frame_size):
        self.tmp, self.path = Path(tmp), Path(path)
        codec = video_codec(self.path)
        width, height = frame_size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*codec), float(fps),
                                      (int(width), int(height)))
        if not self.writer.isOpened():
            raise VideoWriteError(f"{self.path}: OpenCV cannot write this video (codec {codec})")
        self.n_frames = 0
        self.released = False

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
        raise VideoWriteError(f"{self.path}: {reason} after {self.n_frames} frames; "
                              "the partial video is not kept")

    def release(self):
        if not self.released:
            with quiet_opencv():
                self.writer.release()
            self.released = True

    def finish(self):
        """Close the file and check it holds every frame written; returns :attr:`n_frames`."""
        self.release()
        held = frames_in_file(self.tmp)
        if held != self.n_frames:
            raise VideoWriteError(f"{self.path}: {self.n_frames} frames written but the file "
                                  f"holds {held} (disk full or write error); "
                                  "the partial video is not kept")
        return self.n_frames


def frames_in_file(path):
    """The frame count a closed video file reports (0 when OpenCV cannot open it)."""
    with quiet_opencv():
        capture = cv2.VideoCapture(str(path))
        try:
            return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        finally:
            capture.release()


class _NothingWritten(Exception):
    """Internal: no frame was written, so nothing is published (and nothing is wrong)."""


@contextlib.contextmanager
def video_output(path, fps, frame_size):
    """Yield a :class:`CheckedVideoWriter` on a temporary file, published as ``path`` at the end.

    Published when the block ends normally with at least one frame, and also
    after an error that is not the writer's (a camera unplugged: the frames so
    far are kept, then the error goes on); never after a :class:`VideoWriteError`
    or when the file does not hold every frame written. The file gets the
    user's umask (``utils.atomic.atomic_path``).
    """
    error = None
    try:
        with atomic_path(path) as tmp:
            writer = CheckedVideoWriter(tmp, path, fps, frame_size)
            try:
                yield writer
            except VideoWriteError:
                writer.release()
                raise
            except Exception as e:  # not the writer's fault: keep the frames written so far
                error = e
            if writer.n_frames == 0:
                writer.release()
                raise _NothingWritten
            writer.finish()
    except _NothingWritten:
        pass
    if error is not None:
        raise error
