"""uvcdemo --fast and live sources: the single-scale net at its size; frames dropped, not queued.

The dropping tests drive ``LatestFrame`` with a fake capture and a fake, slow
network that synchronise through events, so which frames are shown is exact.
Sleeps add up to about 0.15 s: 5 ms a frame for the in-order file, 20 ms a
shown frame for the ``--realtime`` run of a real (tiny) network.
"""

import re
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from tests.scripts.test_uvcdemo import read_video, run, write_video
from tests.tiny_model import tiny_setup

from libs.inference import frame_loop as video_loop
from libs.inference import predict
from libs.inference.predict import load_model, network_input, predict_probs
from libs.inference.video import LatestFrame
from libs.models import build_model
from libs.models.deeplabv2 import DeepLabV2
from libs.models.geometry import model_geometry
from libs.models.msc import MSC

N_CLASSES = 8
FAST = video_loop.Profile("fast", True, None, 65, "fp32")
EVENT_TIMEOUT_S = 5.0  # only reached when the code under test is broken


def reader_threads():
    return [t for t in threading.enumerate() if t.name == "frame-reader" and t.is_alive()]


class FakeCapture:
    """Frames 0, 1, ... as 2x2 images filled with their number; ``before_read(i)`` runs first.

    Frame 0 is the one ``open_source`` would have read; ``read()`` delivers 1..n-1,
    then the end of the source (``n`` None: never ends).
    """

    def __init__(self, n=None, before_read=lambda i: None):
        self.n = n
        self.next = 1
        self.before_read = before_read

    @staticmethod
    def frame(i):
        return np.full((2, 2, 3), i, np.uint8)

    def read(self):
        self.before_read(self.next)
        if self.n is not None and self.next >= self.n:
            return False, None
        self.next += 1
        return True, self.frame(self.next - 1)

    def get(self, prop):
        return float(self.n or 0) if prop == cv2.CAP_PROP_FRAME_COUNT else 0.0


class ListWriter:
    def __init__(self):
        self.frames = []

    def write(self, frame):
        self.frames.append(frame)


def fake_network(monkeypatch, on_frame):
    """Replace the network: ``on_frame(frame number)`` runs, the label map is all zeros."""
    seen = []

    def segment_frame(model, frame, *args, **kwargs):
        seen.append(int(frame[0, 0, 0]))
        on_frame(seen[-1])
        return np.zeros(frame.shape[:2], np.int64)

    monkeypatch.setattr(video_loop, "segment_frame", segment_frame)
    return seen


def run_loop(capture, **kwargs):
    writer = ListWriter()
    stats = video_loop.RunStats()
    playback = video_loop.Playback(FAST, None, [str(i) for i in range(N_CLASSES)], print,
                                   writer=writer, **kwargs)
    video_loop.run(None, "cpu", capture, FakeCapture.frame(0), playback, stats)
    return stats, writer


def test_slow_network_gets_the_newest_frame_and_the_rest_are_counted_dropped(monkeypatch):
    n = 6
    network_busy, all_read = threading.Event(), threading.Event()

    def before_read(i):
        # The camera delivers frames 1..5 only while the network works on frame 0.
        assert network_busy.wait(EVENT_TIMEOUT_S)
        if i == n:
            all_read.set()

    def slow_network(i):
        if i == 0:
            network_busy.set()
            assert all_read.wait(EVENT_TIMEOUT_S)

    seen = fake_network(monkeypatch, slow_network)
    stats, writer = run_loop(FakeCapture(n, before_read), live=True)
    assert seen == [0, n - 1]  # 1..4 were replaced in the one-slot buffer before being taken
    assert (stats.shown, stats.dropped) == (2, n - 2)
    assert len(writer.frames) == 2
    assert stats.summary().startswith("2 frames shown, 4 dropped, in ")
    assert not reader_threads()


def test_a_file_without_realtime_gives_every_frame_in_order(monkeypatch):
    seen = fake_network(monkeypatch, lambda i: time.sleep(0.005))  # slower than the source
    stats, writer = run_loop(FakeCapture(8), live=False)
    assert seen == list(range(8))
    assert (stats.shown, stats.dropped) == (8, 0)
    assert len(writer.frames) == 8


@pytest.mark.parametrize("error", [RuntimeError("network failed"), KeyboardInterrupt()])
def test_the_reader_stops_when_the_consumer_fails_or_is_interrupted(monkeypatch, error):
    calls = []

    def failing_network(i):  # the second frame segmented fails, whichever it is
        calls.append(i)
        if len(calls) == 2:
            raise error

    fake_network(monkeypatch, failing_network)
    stats = video_loop.RunStats()
    start = time.perf_counter()
    with pytest.raises(type(error)):
        playback = video_loop.Playback(FAST, None, ["a"] * N_CLASSES, print, live=True,
                                       pace_fps=1000.0)
        video_loop.run(None, "cpu", FakeCapture(None), FakeCapture.frame(0), playback, stats)
    assert time.perf_counter() - start < 2.0
    assert not reader_threads()  # a camera that never ends is not read any more
    assert stats.shown == 1 and stats.seconds > 0


def test_a_reader_error_reaches_the_consumer_after_the_frames_read():
    first_taken = threading.Event()

    def before_read(i):
        assert first_taken.wait(EVENT_TIMEOUT_S)
        if i == 3:
            raise OSError("camera unplugged")

    seen = []
    reader = LatestFrame(FakeCapture(None, before_read), FakeCapture.frame(0))
    with reader, pytest.raises(OSError, match="camera unplugged"):
        for frame in reader:
            seen.append(int(frame[0, 0, 0]))
            first_taken.set()
            deadline = time.perf_counter() + EVENT_TIMEOUT_S
            while reader._thread.is_alive() and time.perf_counter() < deadline:
                time.sleep(0.001)  # frame 0 is slow: frames 1 and 2 arrive, then the error
    assert seen == [0, 2] and reader.n_dropped == 1  # frame 2 still shown, then the error
    assert not reader._thread.is_alive()


def test_q_in_the_window_stops_a_live_source(monkeypatch):
    fake_network(monkeypatch, lambda i: None)
    monkeypatch.setattr(cv2, "setMouseCallback", lambda *args: None)
    monkeypatch.setattr(cv2, "imshow", lambda *args: None)
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q"))
    stats, _ = run_loop(FakeCapture(None), live=True, window=True, pace_fps=1000.0)
    assert stats.shown == 1
    assert not reader_threads()


def test_shorter_side_resize():
    assert predict.resize_shorter_side(np.zeros((480, 640, 3), np.uint8), 321).shape == (
        321, 428, 3)
    assert predict.resize_shorter_side(np.zeros((640, 480, 3), np.uint8), 321).shape == (
        428, 321, 3)
    image = np.zeros((65, 90, 3), np.uint8)
    assert predict.resize_shorter_side(image, 65) is image


@pytest.mark.parametrize("single_scale", [True, False])
def test_segment_frame_gives_segments_labels_at_the_frame_size(toy_cfg, one_torch_thread,
                                                               single_scale):
    torch.manual_seed(0)
    model = build_model(toy_cfg.MODEL, N_CLASSES).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".aspp." in name and name.endswith("weight"):
                torch.nn.init.normal_(param, std=0.5)  # classes that differ
    net = model.base if single_scale else model
    frame = np.random.default_rng(0).integers(0, 256, (64, 80, 3), np.uint8)
    mean, cpu = toy_cfg.IMAGE.MEAN, torch.device("cpu")
    labels = video_loop.segment_frame(net, frame, None, mean, cpu, shorter_side=65)
    small = cv2.resize(frame, (81, 65), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():  # segment()'s probabilities, brought to the frame's size
        expected = predict_probs(net, network_input(small, mean), (64, 80))[0].argmax(0).numpy()
    assert labels.shape == (64, 80) and len(np.unique(labels)) > 1
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("geometry", ["caffe", "pytorch"])
def test_the_fast_network_keeps_the_msc_geometry(toy_cfg, tmp_path, geometry):
    toy_cfg.MODEL.MSC.GEOMETRY = geometry
    _, checkpoint = tiny_setup(toy_cfg, tmp_path)
    profile = video_loop.Profile.from_config(toy_cfg, fast=True, precision="fp32")
    model = load_model(toy_cfg, checkpoint, torch.device("cpu"), log=lambda line: None,
                       precision=profile.precision, single_scale=profile.single_scale)
    assert isinstance(model.net, DeepLabV2) and model_geometry(model) == geometry


@pytest.fixture
def setup(toy_cfg, synthetic_root, tmp_path):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    video, size = write_video(tmp_path / "input.avi", synthetic_root)
    return config_path, checkpoint, video, size


@pytest.mark.parametrize("fast, network, network_input, profile", [
    # 64x80 frames: shorter side 65 -> 65x81 (already 8k+1 sides), one pass of the base net
    (True, DeepLabV2, (1, 3, 65, 81), "fast: single scale, shorter side 65, fp32, no CRF"),
    # longer side 65 -> 52x65, padded to 57x65 for the MSC (which runs its own scales inside)
    (False, MSC, (1, 3, 57, 65),
     "default: multi-scale (1, 0.5, 0.75), longer side 65, fp32, no CRF"),
])
def test_profiles_run_their_network_at_their_size(setup, tmp_path, monkeypatch, fast, network,
                                                  network_input, profile):
    config_path, checkpoint, video, (height, width) = setup
    prepared, inputs = [], []
    real_prepare = predict.prepare_for_inference

    def spy(net, precision):
        prepared.append(type(net))
        model = real_prepare(net, precision)
        model.register_forward_pre_hook(lambda module, args: inputs.append(
            (tuple(args[0].shape), args[0].dtype)))
        return model

    monkeypatch.setattr(predict, "prepare_for_inference", spy)
    output = tmp_path / "blended.avi"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output,
                 "--no-show", *(["--fast"] if fast else []))
    assert result.exit_code == 0, result.output
    assert f"80x64 frames, {profile}; every frame in order" in result.output
    assert "5 frames shown, 0 dropped, in" in result.output
    assert prepared == [network]
    assert inputs == [(network_input, torch.float32)] * 5  # one pass per frame, fp32
    frames, _ = read_video(output)
    assert len(frames) == 5 and all(f.shape == (height, width, 3) for f in frames)


def test_realtime_file_drops_what_the_network_cannot_keep_up_with(setup, synthetic_root,
                                                                  tmp_path, monkeypatch):
    config_path, checkpoint, _, _ = setup
    n = 20
    video, _ = write_video(tmp_path / "fast_camera.avi", synthetic_root, n_frames=n)
    # Pretend the file was filmed at 200 fps (a frame every 5 ms) and the network takes >= 20 ms.
    monkeypatch.setattr("uvcdemo.source_fps", lambda capture: 200.0)
    original = video_loop.segment_frame

    def slow_segment_frame(*args, **kwargs):
        time.sleep(0.02)
        return original(*args, **kwargs)

    monkeypatch.setattr(video_loop, "segment_frame", slow_segment_frame)
    output = tmp_path / "live.avi"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output,
                 "--no-show", "--fast", "--realtime")
    assert result.exit_code == 0, result.output
    assert "newest frame, slower frames dropped" in result.output
    shown, dropped = map(int, re.search(r"\b(\d+) frames shown, (\d+) dropped, in",
                                        result.output).groups())
    assert shown + dropped == n and dropped >= n // 2
    assert len(read_video(output)[0]) == shown
    assert not reader_threads()
