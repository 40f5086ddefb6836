"""uvcdemo.py: a video written here goes in, the blended video comes out; every bad source fails cleanly."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_model import tiny_setup

import uvcdemo
from libs.inference import video as video_loop
from libs.utils.visualize import colorize

N_FRAMES = 5
FRAME_RATE = 7.0
NO_SUCH_CAMERA = 99


def write_video(path, synthetic_root, n_frames=N_FRAMES):
    """An MJPG AVI of synthetic test images (64x80), as a camera or phone might record."""
    images = sorted((Path(synthetic_root) / "images").glob("*.jpg"))
    first = cv2.imread(str(images[0]))
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FRAME_RATE,
                             (width, height))
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(cv2.imread(str(images[i % len(images)])))
    writer.release()
    return path, (height, width)


def read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def run(*args):
    return CliRunner().invoke(uvcdemo.main, [str(a) for a in args])


@pytest.fixture
def setup(toy_cfg, synthetic_root, tmp_path):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    video, size = write_video(tmp_path / "input.avi", synthetic_root)
    return config_path, checkpoint, video, size


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_in_blended_video_out(setup, tmp_path, suffix):
    config_path, checkpoint, video, (height, width) = setup
    output = tmp_path / f"blended{suffix}"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output, "--no-show")
    assert result.exit_code == 0, result.output
    assert f"{N_FRAMES} frames shown, 0 dropped, in" in result.output
    frames, fps = read_video(output)
    assert len(frames) == N_FRAMES
    assert all(frame.shape == (height, width, 3) for frame in frames)
    assert fps == pytest.approx(FRAME_RATE)
    assert not list(tmp_path.glob("*.tmp*"))
    # The label colours are blended in: the output is not the input.
    source, _ = read_video(video)
    assert np.abs(frames[-1].astype(int) - source[-1].astype(int)).mean() > 5


def test_max_frames(setup, tmp_path):
    config_path, checkpoint, video, _ = setup
    output = tmp_path / "two.avi"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output,
                 "--max-frames", 2, "--no-show")
    assert result.exit_code == 0, result.output
    assert len(read_video(output)[0]) == 2


def test_interrupt_keeps_the_frames_already_written(setup, tmp_path, monkeypatch):
    config_path, checkpoint, video, _ = setup
    original = video_loop.segment_frame
    calls = []

    def interrupted_on_third_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(video_loop, "segment_frame", interrupted_on_third_frame)
    output = tmp_path / "partial.avi"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output, "--no-show")
    assert "interrupted" in result.output
    assert len(read_video(output)[0]) == 2


def test_blend_weights_frame_and_label_colours():
    frame = np.full((2, 3, 3), 200, np.uint8)
    label_map = np.array([[0, 1, 2], [2, 1, 0]])
    colours_rgb = colorize(label_map, 3)
    out = video_loop.blend(frame, label_map, 3, alpha=0.25)
    expected = 0.75 * 200 + 0.25 * colours_rgb[:, :, ::-1].astype(float)
    assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-6


def test_pointer_reports_class_on_change():
    printed = []
    pointer = video_loop.PointerReporter(["grass", "water"], echo=printed.append)
    pointer(cv2.EVENT_MOUSEMOVE, 0, 0, 0, None)  # no frame yet: silent
    pointer.label_map = np.array([[0, 1], [0, 1]])
    for x, y in [(0, 0), (0, 1), (1, 1), (5, 5), (1, 0)]:
        pointer(cv2.EVENT_MOUSEMOVE, x, y, 0, None)
    assert printed == ["(0, 0): grass", "(1, 1): water"]


def test_gui_detection_reads_the_build_information(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:    NONE\n")
    assert not video_loop.opencv_has_gui()
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:    GTK3\n    GTK+: YES\n")
    assert video_loop.opencv_has_gui()


def test_headless_without_output_is_one_line(setup, monkeypatch):
    monkeypatch.setattr(uvcdemo, "open_window", lambda: False)
    config_path, checkpoint, video, _ = setup
    result = run("-c", config_path, "-m", checkpoint, "--video", video)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: no window can be opened here (no display or OpenCV without GUI support): "
        "pass --output FILE to write the blended video"]


def test_bad_sources_and_weights_give_one_clear_line(setup, toy_cfg, tmp_path):
    config_path, checkpoint, video, _ = setup
    (tmp_path / "other").mkdir()
    _, wrong_classes = tiny_setup(toy_cfg.deepcopy(), tmp_path / "other", n_classes=5)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 50)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    output = tmp_path / "out.mp4"
    cases = {
        "no camera": ([checkpoint, "--camera-id", NO_SUCH_CAMERA],
                      [f"camera {NO_SUCH_CAMERA}", "no such camera"]),
        "missing video": ([checkpoint, "--video", tmp_path / "none.mp4"],
                          ["none.mp4", "not found"]),
        "unreadable video": ([checkpoint, "--video", garbage], ["garbage.mp4", "cannot open"]),
        "empty video": ([checkpoint, "--video", empty], ["empty.avi"]),
        "missing checkpoint": ([tmp_path / "none.pth", "--video", video],
                               ["none.pth", "not found"]),
        "wrong class count": ([wrong_classes, "--video", video],
                              ["tiny_5.pth", "5 classes", "asks for 8"]),
    }
    for case, (args, expected) in cases.items():
        result = run("-c", config_path, "-m", *args, "-o", output, "--no-show")
        assert result.exit_code == 1, (case, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (case, result.output)
        for fragment in expected:
            assert fragment in lines[0], (case, lines[0])
    assert not output.exists() and not list(tmp_path.glob("*.tmp*"))

    result = run("-c", config_path, "-m", checkpoint, "--video", video,
                 "-o", tmp_path / "out.mov", "--no-show")
    assert result.exit_code == 1
    assert "out.mov: unsupported video format '.mov'" in result.output
