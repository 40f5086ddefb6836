#!/usr/bin/env python
"""Segment a live camera or a video file frame by frame (see docs/demo.md).

    python uvcdemo.py --config config/cocostuff.yaml --model-path PATH [--camera-id 0]
    python uvcdemo.py --config ... --model-path PATH --video FILE --output blended.mp4

Each frame is resized so its longer side is ``IMAGE.SIZE.DEMO`` for the
network; the label map is upsampled to the frame's own size, coloured, and
blended with the frame, with the processing rate written in a corner. In a
window, ``q`` or Esc quits and the class under the mouse pointer is printed.
A window needs OpenCV with GUI support (the ``opencv-python`` wheel; the default
``opencv-python-headless`` has none), otherwise the blended video goes to
``--output`` only.
"""

import contextlib
import os
import re
import sys
import time
from pathlib import Path

import click
import cv2
import numpy as np
from tqdm import tqdm

from libs.datasets import DatasetError, load_checked_class_names
from libs.models.weights import CheckpointError
from libs.utils.config import ConfigError, load_config
from libs.inference.predict import load_model, resize_longer_side, segment
from libs.utils.device import choose_device
from libs.utils.visualize import colorize, display_available

WINDOW_NAME = "DeepLab v2 (q or Esc quits)"
QUIT_KEYS = (ord("q"), 27)  # 27 is Esc
LABEL_ALPHA = 0.5  # weight of the colour label map in the blend
FALLBACK_FPS = 30.0  # frame rate of the written video when the source does not report one
# Writable containers and the codec each one gets (both are in every OpenCV build with FFMPEG).
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
# Frames-per-second overlay.
TEXT_ORIGIN = (8, 24)
TEXT_SCALE = 0.7
TEXT_THICKNESS = 2
TEXT_OUTLINE = 4


class SourceError(ValueError):
    """A camera or video that cannot be read; the message names it."""


# ------------------------------------------------------------------ input and output


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
        return _open_source(camera_id, video)


def _open_source(camera_id, video):
    if video is not None:
        path = Path(video)
        if not path.is_file():
            raise SourceError(f"{path}: video file not found")
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise SourceError(f"{path}: cannot open video (unsupported format or corrupt file)")
        ok, frame = capture.read()
        if not ok or frame is None:
            capture.release()
            raise SourceError(f"{path}: no readable frame in the video (corrupt or empty file)")
        return capture, frame
    capture = cv2.VideoCapture(int(camera_id))
    if not capture.isOpened():
        raise SourceError(f"camera {camera_id}: no such camera or it cannot be opened "
                          "(check --camera-id, or use --video FILE)")
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise SourceError(f"camera {camera_id}: opened but delivers no frames")
    return capture, frame


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


def check_video_format(path):
    """The codec for ``path``'s suffix, or :class:`SourceError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CODECS:
        raise SourceError(f"{path}: unsupported video format {path.suffix!r}; "
                          f"use one of {', '.join(sorted(CODECS))}")
    return CODECS[suffix]


class AtomicVideoWriter:
    """A ``cv2.VideoWriter`` on a temporary file that is renamed to ``path`` on close.

    Whatever was written before an interruption (Ctrl-C, a camera unplugged)
    is still finalised into a playable file; an output with no frame at all is
    discarded rather than left as an empty file.
    """

    def __init__(self, path, fps, frame_size):
        self.path = Path(path)
        codec = check_video_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The container follows the file name, so the temporary name keeps the suffix.
        self.tmp = self.path.with_name(f"{self.path.stem}.tmp{self.path.suffix}")
        width, height = frame_size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*codec),
                                      float(fps), (int(width), int(height)))
        if not self.writer.isOpened():
            self._discard()
            raise SourceError(f"{self.path}: OpenCV cannot write this video "
                              f"(codec {codec})")
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


def segment_frame(model, frame_bgr, cfg, device):
    """The frame's label map at the frame's own size (network input: longer side IMAGE.SIZE.DEMO)."""
    small = resize_longer_side(frame_bgr, cfg.IMAGE.SIZE.DEMO)
    _, label_map = segment(model, small, cfg, device, output_size=frame_bgr.shape[:2])
    return label_map


class PointerReporter:
    """Mouse callback state: prints the class under the pointer whenever it changes."""

    def __init__(self, class_names, echo=click.echo):
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


def run(model, cfg, device, capture, first_frame, class_names, writer=None, window=False,
        max_frames=None, progress=False):
    """Segment, blend and emit frames until the source ends or ``q``/Esc; return (n, seconds)."""
    pointer = PointerReporter(class_names)
    if window:
        cv2.setMouseCallback(WINDOW_NAME, pointer)
    total = max_frames
    if total is None and capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    n_frames = 0
    start = time.perf_counter()
    with tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for frame in frames(capture, first_frame):
            tick = time.perf_counter()
            label_map = segment_frame(model, frame, cfg, device)
            blended = blend(frame, label_map, cfg.DATASET.N_CLASSES)
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


# ------------------------------------------------------------------ command line


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config, e.g. config/cocostuff.yaml.")
@click.option("-m", "--model-path", required=True, type=click.Path(dir_okay=False),
              help="Weights: a converted Caffe model or a train.py checkpoint.")
@click.option("--camera-id", type=click.IntRange(min=0), default=0, show_default=True,
              help="Camera to read (ignored with --video).")
@click.option("--video", type=click.Path(dir_okay=False), default=None,
              help="Read this video file instead of a camera.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the blended video here (.mp4 or .avi); required without a display.")
@click.option("--show/--no-show", default=None,
              help="Open a window  [default: when a display and OpenCV GUI support exist]")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after this many frames  [default: until the source ends, q or Esc]")
@click.option("--cuda/--no-cuda", default=None,
              help="Run the model on the GPU  [default: when CUDA is available]")
def main(config_path, model_path, camera_id, video, output, show, max_frames, cuda):
    """Segment a camera or a video frame by frame and show or write the blended result."""
    window = False
    if show is not False:
        window = open_window()
        if show and not window:
            reason = ("this OpenCV build has no GUI support (install opencv-python instead of "
                      "opencv-python-headless)" if not opencv_has_gui() else
                      "no display available (DISPLAY is not set)")
            raise click.ClickException(f"--show: {reason}; use --output FILE instead")
    if not window and output is None:
        raise click.ClickException("no window can be opened here (no display or OpenCV without "
                                   "GUI support): pass --output FILE to write the blended video")
    capture = writer = None
    try:
        if output is not None:
            check_video_format(output)  # before the slow part
        cfg = load_config(config_path)
        class_names = load_checked_class_names(cfg)
        device = choose_device(cuda)
        model = load_model(cfg, model_path, device)
        capture, first_frame = open_source(camera_id, video)
        if output is not None:
            fps = capture.get(cv2.CAP_PROP_FPS)
            height, width = first_frame.shape[:2]
            writer = AtomicVideoWriter(output, fps if fps > 0 else FALLBACK_FPS, (width, height))
        source = video if video is not None else f"camera {camera_id}"
        click.echo(f"{source}: {first_frame.shape[1]}x{first_frame.shape[0]} frames, network "
                   f"input longer side {cfg.IMAGE.SIZE.DEMO}" + ("; q or Esc quits" if window else ""))
        try:
            n_frames, seconds = run(model, cfg, device, capture, first_frame, class_names,
                                    writer=writer, window=window, max_frames=max_frames,
                                    progress=not window)
        except KeyboardInterrupt:
            click.echo("interrupted")
            n_frames, seconds = (writer.n_frames if writer else 0), None
        if seconds:
            click.echo(f"{n_frames} frames in {seconds:.1f} s ({n_frames / seconds:.2f} fps)")
    except (ConfigError, DatasetError, CheckpointError, SourceError) as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:  # e.g. an unknown MODEL.NAME
        raise click.ClickException(f"{config_path}: {e}") from None
    finally:
        if capture is not None:
            capture.release()
        if writer is not None and writer.close():
            click.echo(f"blended video: {output} ({writer.n_frames} frames)")
        if window:
            cv2.destroyAllWindows()


if __name__ == "__main__":
    sys.exit(main())
