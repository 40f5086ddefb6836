"""uvcdemo.py: a video written here goes in, the blended video comes out; every bad source fails cleanly."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tests.tiny_model import tiny_setup

import uvcdemo
from libs.inference import frame_loop
from libs.inference import video as video_io
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
    original = frame_loop.segment_frame
    calls = []

    def interrupted_on_third_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(frame_loop, "segment_frame", interrupted_on_third_frame)
    output = tmp_path / "partial.avi"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output, "--no-show")
    assert "interrupted" in result.output
    assert len(read_video(output)[0]) == 2


def test_blend_weights_frame_and_label_colours():
    frame = np.full((2, 3, 3), 200, np.uint8)
    label_map = np.array([[0, 1, 2], [2, 1, 0]])
    colours_rgb = colorize(label_map, 3)
    out = frame_loop.blend(frame, label_map, 3, alpha=0.25)
    expected = 0.75 * 200 + 0.25 * colours_rgb[:, :, ::-1].astype(float)
    assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-6


def test_pointer_reports_class_on_change():
    printed = []
    pointer = frame_loop.PointerReporter(["grass", "water"], echo=printed.append)
    pointer(cv2.EVENT_MOUSEMOVE, 0, 0, 0, None)  # no frame yet: silent
    pointer.label_map = np.array([[0, 1], [0, 1]])
    for x, y in [(0, 0), (0, 1), (1, 1), (5, 5), (1, 0)]:
        pointer(cv2.EVENT_MOUSEMOVE, x, y, 0, None)
    assert printed == ["(0, 0): grass", "(1, 1): water"]


def test_gui_detection_reads_the_build_information(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:    NONE\n")
    assert not video_io.opencv_has_gui()
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:    GTK3\n    GTK+: YES\n")
    assert video_io.opencv_has_gui()


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


# ------------------------------------------------------------------ reliability of the written video


def sha256(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_error_line(result, at_start=True):
    """The run's one error line; ``at_start``: it is all the output (nothing ran before it)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    if at_start:
        assert lines == errors, result.output
    return errors[0]


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_the_frame_count_reported_is_the_count_in_the_file(setup, tmp_path, suffix):
    config_path, checkpoint, video, _ = setup
    output = tmp_path / f"counted{suffix}"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output, "--no-show",
                 "--max-frames", 4)
    assert result.exit_code == 0, result.output
    assert f"blended video: {output} (4 frames, checked in the file)" in result.output
    assert len(read_video(output)[0]) == 4
    assert video_io.frames_in_file(output) == 4


class _Free:
    def __init__(self, free):
        self.free = free


def test_a_full_disk_is_one_line_and_publishes_nothing(setup, tmp_path, monkeypatch):
    config_path, checkpoint, video, _ = setup
    calls = []

    def disk_usage(path):  # room for two frames, then none
        calls.append(path)
        return _Free(10**9 if len(calls) <= 2 else 0)

    monkeypatch.setattr(video_io.shutil, "disk_usage", disk_usage)
    output = tmp_path / "full.avi"
    line = one_error_line(run("-c", config_path, "-m", checkpoint, "--video", video,
                              "-o", output, "--no-show"), at_start=False)
    assert f"{output}: disk full" in line
    assert "after 2 frames; the partial video is not kept" in line
    assert not output.exists() and not list(tmp_path.glob(".full*"))


class _DroppingWriter:
    """A cv2.VideoWriter that silently loses its third frame, as a failing disk can."""

    real = cv2.VideoWriter

    def __init__(self, *args):
        self.writer = self.real(*args)
        self.n = 0

    def isOpened(self):
        return self.writer.isOpened()

    def write(self, frame):
        self.n += 1
        if self.n != 3:
            self.writer.write(frame)

    def release(self):
        self.writer.release()


def test_frames_lost_silently_are_found_in_the_file(setup, tmp_path, monkeypatch):
    config_path, checkpoint, video, _ = setup
    monkeypatch.setattr(cv2, "VideoWriter", _DroppingWriter)
    output = tmp_path / "lossy.mp4"
    line = one_error_line(run("-c", config_path, "-m", checkpoint, "--video", video,
                              "-o", output, "--no-show"), at_start=False)
    assert line == (f"Error: {output}: {N_FRAMES} frames written but the file holds "
                    f"{N_FRAMES - 1} (disk full or write error); the partial video is not kept")
    assert not output.exists() and not list(tmp_path.glob(".lossy*"))


def test_output_equal_to_an_input_is_refused(setup, tmp_path):
    config_path, checkpoint, video, _ = setup
    before = {p: sha256(p) for p in (video, checkpoint, config_path)}
    for what, path in (("video", video), ("model", checkpoint), ("video", tmp_path / "." /
                                                                  video.name)):
        line = one_error_line(run("-c", config_path, "-m", checkpoint, "--video", video,
                                  "-o", path, "--no-show"))
        assert line == f"Error: {path}: this is the input {what}; choose another --output"
    assert {p: sha256(p) for p in before} == before
    assert not list(tmp_path.glob(".*.tmp*"))


def test_an_unwritable_output_folder_fails_at_start(setup, tmp_path, monkeypatch):
    config_path, checkpoint, video, _ = setup
    (tmp_path / "blocker").write_text("a file where the folder should be")
    monkeypatch.setattr(uvcdemo, "load_model",
                        lambda *a, **k: pytest.fail("the model was loaded first"))
    line = one_error_line(run("-c", config_path, "-m", checkpoint, "--video", video,
                              "-o", tmp_path / "blocker" / "out.avi", "--no-show"))
    assert "blocker: cannot write the blended video there (" in line


def test_a_real_full_disk(setup, tmp_path):
    """A 128 KiB tmpfs (needs root to mount): the run fails with one line, nothing is left there."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    config_path, checkpoint, _, _ = setup
    big = tmp_path / "big.avi"
    noise = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (160, 120))
    for _ in range(24):  # noise compresses badly: tens of KiB a frame, the disk fills part-way
        writer.write(noise.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(disk)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        line = one_error_line(run("-c", config_path, "-m", checkpoint, "--video", big,
                                  "-o", disk / "out.avi", "--no-show"), at_start=False)
        assert "the partial video is not kept" in line
        assert int(line.split(" after ")[1].split()[0]) > 0  # it failed part-way through
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
