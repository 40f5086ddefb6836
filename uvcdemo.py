#!/usr/bin/env python
"""Segment a live camera or a video file frame by frame (see docs/demo.md).

    python uvcdemo.py --config config/cocostuff.yaml --model-path PATH [--camera-id 0] [--fast]
    python uvcdemo.py --config ... --model-path PATH --video FILE --output blended.mp4

A camera (or a file with ``--realtime``) is read in a background thread and the newest frame
segmented, so frames the network cannot keep up with are dropped and counted.
"""

import contextlib
import sys
from pathlib import Path

import click
import cv2

from libs.cli import (command, config_option, cuda_option, load_cli_config, model_path_option,
                      one_line_errors, precision_option)
from libs.datasets import load_checked_class_names
from libs.inference.frame_loop import Playback, Profile, RunStats, run
from libs.inference.predict import load_model
from libs.inference.video import (no_window_reason, open_source, open_window, source_fps,
                                  video_output)
from libs.utils.atomic import check_writable_dir, refuse_overwriting_inputs, video_codec
from libs.utils.device import choose_device


def choose_window(show, output):
    """Whether a window is open; one line of error when ``--show`` or no ``--output`` needs one."""
    window = open_window() if show is not False else False
    if show and not window:
        raise click.ClickException(f"--show: {no_window_reason()}; use --output FILE instead")
    if not window and output is None:
        raise click.ClickException("no window can be opened here (no display or OpenCV without "
                                   "GUI support): pass --output FILE to write the blended video")
    return window


def start_line(source, frame, scales, playback):
    """What is read, how the network sees it, and whether frames may be dropped."""
    reading = "newest frame, slower frames dropped" if playback.live else "every frame in order"
    return (f"{source}: {frame.shape[1]}x{frame.shape[0]} frames, "
            f"{playback.profile.describe(scales)}; {reading}"
            + ("; q or Esc quits" if playback.window else ""))


@command()
@config_option(help="YAML config, e.g. config/cocostuff.yaml.")
@model_path_option()
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
@click.option("--fast", is_flag=True,
              help="Single-scale network on frames whose shorter side is IMAGE.SIZE.DEMO_FAST  "
                   "[default: multi-scale, longer side IMAGE.SIZE.DEMO]")
@click.option("--realtime", is_flag=True,
              help="Read --video at its own frame rate and drop the frames the network cannot "
                   "keep up with, as a camera is read  [default: every frame of a file, in order]")
@cuda_option()
@precision_option()
def main(config_path, model_path, camera_id, video, output, show, max_frames, fast, realtime,
         cuda, precision):
    """Segment a camera or a video frame by frame and show or write the blended result."""
    window = choose_window(show, output)
    try:
        with one_line_errors(config_path), contextlib.ExitStack() as stack:
            if output is not None:  # before the slow part
                refuse_overwriting_inputs(output, {"video": video, "config": config_path,
                                                   "model": model_path}, option="--output")
                video_codec(output)
                check_writable_dir(Path(output).absolute().parent, "the blended video")
            cfg = load_cli_config(config_path)
            profile = Profile.from_config(cfg, fast, precision)
            playback = Playback(profile, cfg.IMAGE.MEAN, load_checked_class_names(cfg), click.echo,
                                window=window, max_frames=max_frames, progress=not window,
                                live=video is None or realtime)
            device = choose_device(cuda)
            model = load_model(cfg, model_path, device, precision=profile.precision,
                               single_scale=profile.single_scale)
            capture, first_frame = open_source(camera_id, video)
            stack.callback(capture.release)
            if video is not None:
                playback.pace_fps = source_fps(capture)
            stats = RunStats()
            writing = (video_output(output, source_fps(capture), first_frame.shape[1::-1])
                       if output is not None else contextlib.nullcontext())
            try:  # Ctrl-C ends the run quietly; the video keeps the frames written
                with writing as playback.writer:
                    click.echo(start_line(video or f"camera {camera_id}", first_frame,
                                          cfg.MODEL.MSC.SCALES, playback))
                    run(model, device, capture, first_frame, playback, stats)
            except KeyboardInterrupt:
                click.echo("interrupted")
            click.echo(stats.summary())
        if playback.writer is not None and playback.writer.n_frames:
            click.echo(f"blended video: {output} ({playback.writer.n_frames} frames, "
                       "checked in the file)")
    finally:
        if window:
            cv2.destroyAllWindows()


if __name__ == "__main__":
    sys.exit(main())
