"""Segmenting a video frame by frame (uvcdemo.py): the network's profile, the overlay, the loop.

The label map comes back at the frame's size, blended with the frame, with the processing rate
and a legend of the classes drawn on it. A live source is read by :class:`.video.LatestFrame`.
"""

import contextlib
import time
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..models.geometry import model_geometry
from ..utils.visualize import (colorize, draw_legend, legend_entries, palette, put_outlined_text,
                               text_style)
from .predict import dense_logits, network_input, resize_longer_side, resize_shorter_side
from .video import WINDOW_NAME, LatestFrame, frames

QUIT_KEYS = (ord("q"), 27)  # 27 is Esc
LABEL_ALPHA = 0.5  # weight of the colour label map in the blend


class Profile(NamedTuple):
    """Which network sees the frames and at what size (exactly one side is set); no CRF."""

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


def blend(frame_bgr, label_map, n_classes, alpha=LABEL_ALPHA):
    """The frame with its colour label map laid over it (same size as the frame)."""
    colours_bgr = colorize(label_map, n_classes)[:, :, ::-1]
    return cv2.addWeighted(frame_bgr, 1.0 - alpha, np.ascontiguousarray(colours_bgr), alpha, 0.0)


def draw_rate(frame_bgr, frames_per_second, style=None):
    """Write the processing rate in the top-left corner, white on a black outline."""
    style = text_style(*frame_bgr.shape[:2]) if style is None else style
    origin = (style.margin, style.margin + style.text_height)
    return put_outlined_text(frame_bgr, f"{frames_per_second:.2f} fps", origin, style)


def draw_frame_legend(frame_bgr, label_map, class_names, colours_bgr, style=None):
    """The legend of the classes in ``label_map`` (largest first, swatches in ``colours_bgr``) in
    the top-right corner; its box ``(x0, y0, x1, y1)``, or None on a frame too small for one."""
    style = text_style(*frame_bgr.shape[:2]) if style is None else style
    return draw_legend(frame_bgr, legend_entries(label_map, class_names, colours_bgr), style,
                       right=True)


def segment_frame(model, frame_bgr, longer_side, mean, device, shorter_side=None):
    """The frame's label map (HxW int64) at its own size, the network seeing it resized to
    ``longer_side``, or to ``shorter_side`` when that is given instead (``longer_side`` None)."""
    small = (resize_longer_side(frame_bgr, longer_side) if shorter_side is None
             else resize_shorter_side(frame_bgr, shorter_side))
    # The argmax of the logits equals that of segment()'s softmax, without a softmax over every
    # frame pixel, and only the label map leaves the device.
    with torch.inference_mode():
        x = network_input(small, mean).to(device)
        logits = dense_logits(model, x, frame_bgr.shape[:2], model_geometry(model))
        return logits[0].argmax(0).cpu().numpy()


class PointerReporter:
    """Mouse callback: ``echo`` a line with the class under the pointer whenever it changes."""

    def __init__(self, class_names, echo):
        self.class_names, self.echo = class_names, echo
        self.label_map = self.last = None

    def __call__(self, event, x, y, flags, param):
        if self.label_map is None or not (0 <= y < self.label_map.shape[0]
                                          and 0 <= x < self.label_map.shape[1]):
            return
        class_id = int(self.label_map[y, x])
        if class_id != self.last:
            self.last = class_id
            self.echo(f"({x}, {y}): {self.class_names[class_id]}")


@dataclass
class RunStats:
    """What a run did so far; filled in place, so it is complete even after Ctrl-C."""

    shown: int = 0  # frames segmented (and written or shown)
    dropped: int = 0  # frames of a live source skipped because the network was busy
    seconds: float = 0.0

    def summary(self):
        rate = f" ({self.shown / self.seconds:.2f} fps)" if self.seconds > 0 and self.shown else ""
        return f"{self.shown} frames shown, {self.dropped} dropped, in {self.seconds:.1f} s{rate}"


@dataclass
class Playback:
    """What :func:`run` does with the frames: the network's view, the outputs, the reading."""

    profile: Profile  # which size the network sees
    mean: object  # the config's IMAGE.MEAN
    class_names: list
    echo: object = print  # prints the class under the mouse pointer in the window
    writer: object = None  # a CheckedVideoWriter, or None
    window: bool = False
    max_frames: int | None = None
    progress: bool = False
    live: bool = False  # read in a background thread, segment the newest frame (LatestFrame)
    pace_fps: float | None = None  # a live file is read at this rate


def run(model, device, capture, first_frame, playback, stats=None):
    """Segment, blend and emit frames until the source ends or ``q``/Esc; return :class:`RunStats`
    (pass ``stats`` to keep the counts when an exception, Ctrl-C, ends the run)."""
    stats = RunStats() if stats is None else stats
    start = time.perf_counter()
    step = _FrameStep(model, device, playback)
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)  # for the progress bar
    total = None if playback.live else playback.max_frames or (int(count) if count > 0 else None)
    reader = (LatestFrame(capture, first_frame, playback.pace_fps) if playback.live
              else contextlib.nullcontext(frames(capture, first_frame)))
    try:
        with reader as source, tqdm(total=total, unit="frame", disable=not playback.progress,
                                    dynamic_ncols=True) as bar:
            for frame in source:
                quit_asked = step(frame)
                stats.shown += 1
                bar.update(1)
                if quit_asked or stats.shown == playback.max_frames:
                    break
    finally:
        stats.dropped = reader.n_dropped if playback.live else 0
        stats.seconds = time.perf_counter() - start
    return stats


class _FrameStep:
    """One frame through the network, the blend, the overlays, the writer and the window."""

    def __init__(self, model, device, playback):
        self.model, self.device, self.playback = model, device, playback
        self.colours_bgr = palette(len(playback.class_names))[:, ::-1]
        self.pointer = PointerReporter(playback.class_names, playback.echo)
        if playback.window:
            cv2.setMouseCallback(WINDOW_NAME, self.pointer)

    def __call__(self, frame):
        """Process ``frame``; True when ``q`` or Esc was pressed in the window."""
        tick = time.perf_counter()
        playback, profile = self.playback, self.playback.profile
        label_map = segment_frame(self.model, frame, profile.longer_side, playback.mean,
                                  self.device, shorter_side=profile.shorter_side)
        blended = blend(frame, label_map, len(playback.class_names))
        style = text_style(*blended.shape[:2])
        draw_frame_legend(blended, label_map, playback.class_names, self.colours_bgr, style)
        draw_rate(blended, 1.0 / max(time.perf_counter() - tick, 1e-9), style)
        if playback.writer is not None:
            playback.writer.write(blended)
        if not playback.window:
            return False
        self.pointer.label_map = label_map
        cv2.imshow(WINDOW_NAME, blended)
        return (cv2.waitKey(1) & 0xFF) in QUIT_KEYS
