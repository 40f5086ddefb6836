"""uvcdemo's frame overlay: a legend of the classes in the frame and a rate text that scale.

The legend is drawn with OpenCV on every frame (libs/inference/frame_loop.py,
libs/utils/visualize.py): the classes visible, largest area first, each swatch
exactly the class's overlay colour; the text is a share of the frame's size.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.scripts.test_uvcdemo import read_video, run
from tests.tiny_model import tiny_setup

from libs.inference import frame_loop as video_loop
from libs.utils.visualize import legend_layout, palette, text_style

N_CLASSES = 8
NAMES = ["grass", "water", "sand", "ball", "crate", "kite", "cloud", "tile"]
COLOURS_BGR = palette(N_CLASSES)[:, ::-1]


def quarters(height, width):
    """Class 1 on half the frame, class 5 on a quarter, classes 2 and 7 on an eighth each."""
    label = np.full((height, width), 1, np.int64)
    label[height // 2:, : width // 2] = 5
    label[height // 2:, width // 2: 3 * width // 4] = 2
    label[height // 2:, 3 * width // 4:] = 7
    return label


def swatch_rows(frame_shape, label):
    """The legend's box and rows as :func:`draw_frame_legend` lays them out for ``label``."""
    style = text_style(*frame_shape[:2])
    entries = video_loop.legend_entries(label, NAMES, COLOURS_BGR)
    return legend_layout(frame_shape, entries, style)


@pytest.mark.parametrize("height, width", [(120, 160), (480, 640), (1080, 1920)])
def test_legend_shows_the_visible_classes_largest_first_in_their_colours(height, width):
    frame = np.full((height, width, 3), 128, np.uint8)
    label = quarters(height, width)
    box = video_loop.draw_frame_legend(frame, label, NAMES, COLOURS_BGR)
    x0, y0, x1, y1 = box
    assert x1 <= width and x0 >= width // 2 and y0 >= 0  # top-right corner
    order = [1, 5, 2, 7]  # by area; ties by class number
    assert swatch_rows(frame.shape, label)[0] == box
    _, rows = swatch_rows(frame.shape, label)
    assert len(rows) == 4
    for class_id, ((sx0, sy0, sx1, sy1), _, _) in zip(order, rows):
        assert (frame[sy0:sy1, sx0:sx1] == COLOURS_BGR[class_id]).all()
    column = frame[y0:y1, rows[0][0][0]:rows[0][0][2]]  # the swatches' column
    for absent in (0, 3, 4, 6):
        assert not (column == COLOURS_BGR[absent]).all(axis=2).any()
    # White text on the darkened box, and the frame outside the box untouched.
    assert (frame[y0:y1, x0:x1] == 255).all(axis=2).sum() > 10
    outside = np.ones((height, width), bool)
    outside[y0:y1, x0:x1] = False
    assert (frame[outside] == 128).all()


def test_many_classes_are_capped_with_more():
    frame = np.zeros((480, 640, 3), np.uint8)
    label = np.arange(480 * 640).reshape(480, 640) % 20
    names = [f"class {i}" for i in range(20)]
    entries = video_loop.legend_entries(label, names, palette(20)[:, ::-1])
    assert len(entries) == 8 and entries[-1] == ("+13 more", None)
    assert video_loop.draw_frame_legend(frame, label, names, palette(20)[:, ::-1]) is not None


def test_a_frame_too_small_for_a_legend_is_left_alone():
    frame = np.full((2, 2, 3), 7, np.uint8)
    assert video_loop.draw_frame_legend(frame, np.zeros((2, 2), np.int64), NAMES,
                                        COLOURS_BGR) is None
    video_loop.draw_rate(frame, 3.0)  # clipped, but no error


def rate_text_height(height, width):
    frame = np.zeros((height, width, 3), np.uint8)
    video_loop.draw_rate(frame, 12.5)
    rows = np.flatnonzero((frame[: height // 3, : width // 2] > 200).all(axis=2).any(axis=1))
    return rows.max() - rows.min() + 1


def test_rate_text_scales_with_the_frame():
    small, medium, large = (rate_text_height(120, 160), rate_text_height(480, 640),
                            rate_text_height(1080, 1920))
    assert small >= 7  # still legible on a 160x120 frame
    assert 0.02 <= medium / 480 <= 0.045 and 0.02 <= large / 1080 <= 0.045
    assert large / medium == pytest.approx(1080 / 480, rel=0.2)


def write_big_video(path, synthetic_root, size=(640, 480), n_frames=3):
    images = sorted((Path(synthetic_root) / "images").glob("*.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, size)
    for i in range(n_frames):
        writer.write(cv2.resize(cv2.imread(str(images[i])), size))
    writer.release()
    return path


def test_the_written_video_carries_the_legend(toy_cfg, synthetic_root, tmp_path, monkeypatch):
    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    video = write_big_video(tmp_path / "big.avi", synthetic_root)
    monkeypatch.setattr(video_loop, "segment_frame",
                        lambda model, frame, *a, **k: quarters(*frame.shape[:2]))
    output = tmp_path / "out.avi"
    result = run("-c", config_path, "-m", checkpoint, "--video", video, "-o", output, "--no-show")
    assert result.exit_code == 0, result.output
    frames, _ = read_video(output)
    assert len(frames) == 3
    _, rows = swatch_rows(frames[0].shape, quarters(*frames[0].shape[:2]))
    for frame in frames:  # MJPG is lossy: the swatch centres are near the exact colours
        for class_id, ((sx0, sy0, sx1, sy1), _, _) in zip([1, 5, 2, 7], rows):
            centre = frame[sy0 + 3:sy1 - 3, sx0 + 3:sx1 - 3].reshape(-1, 3).mean(0)
            assert np.abs(centre - COLOURS_BGR[class_id]).max() < 25, class_id
