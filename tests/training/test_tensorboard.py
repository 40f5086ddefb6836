"""TensorBoard's training image panel (libs/training/tensorboard.py log_images): one readable picture.

Image | ground truth | prediction side by side, the 97-px toy crop enlarged 3x
(the smallest whole factor giving at least 256 px), label maps by nearest
neighbour in the palette's colours, a legend of the classes shown. Read back
from the event file with TensorBoard's ``EventAccumulator``.
"""

import cv2
import numpy as np
import pytest
import torch
from addict import Dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from libs.training.tensorboard import log_images, open_writer
from libs.utils.visualize import IGNORE_COLOUR, PANEL_GAP, colorize, palette, text_style

N_CLASSES = 8
MEAN = {"B": 104.0, "G": 117.0, "R": 123.0}
CFG = Dict(DATASET=Dict(N_CLASSES=N_CLASSES, IGNORE_LABEL=255), IMAGE=Dict(MEAN=MEAN))


def logged_panel(tmp_path, crop, class_names=None, step=4):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, crop, crop, generator=generator) * 40
    labels = torch.randint(0, 3, (2, crop, crop), generator=generator)
    labels[0, :5] = 255  # a strip of ignored pixels
    fused = torch.zeros(2, N_CLASSES, 13, 13)
    fused[:, 6] = 1.0  # the prediction is class 6 everywhere
    writer = open_writer(tmp_path)
    log_images(writer, (None, images, labels), fused, CFG, step, class_names)
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    return events, labels


@pytest.mark.parametrize("crop, factor", [(97, 3), (49, 6), (321, 1)])
def test_one_enlarged_panel_is_written(tmp_path, crop, factor):
    events, labels = logged_panel(tmp_path, crop)
    assert events.Tags()["images"] == ["train/panel"]
    [event] = events.Images("train/panel")
    assert event.step == 4
    panel = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    panel = panel[:, :, ::-1]  # RGB
    side = crop * factor
    style = text_style(side, side)
    header = style.text_height + 2 * style.margin
    assert (event.height, event.width) == panel.shape[:2]
    assert event.height == header + side and side >= min(256, crop)
    assert event.width > 3 * side + 2 * PANEL_GAP  # plus the legend column
    # The ground truth, enlarged by nearest neighbour: exactly the palette's colours, ignored white.
    truth = colorize(labels[0].numpy(), N_CLASSES, 255)
    x = side + PANEL_GAP
    np.testing.assert_array_equal(panel[header:, x:x + side],
                                  np.kron(truth, np.ones((factor, factor, 1), np.uint8)))
    prediction = panel[header:, 2 * x:2 * x + side]
    assert (prediction == palette(N_CLASSES)[6]).all()
    legend = panel[header:, 3 * x:]
    for colour in [*palette(N_CLASSES)[[0, 1, 2, 6]], IGNORE_COLOUR]:  # the classes shown
        assert (legend == colour).all(axis=2).sum() >= style.text_height ** 2 // 2
    assert not (legend == palette(N_CLASSES)[4]).all(axis=2).any()  # not a class absent


def test_legend_names_change_the_legend_only(tmp_path):
    numbered, _ = logged_panel(tmp_path / "a", 97)
    named, _ = logged_panel(tmp_path / "b", 97, class_names=[f"a long name {i}" for i in range(8)])

    def decode(events):
        image = events.Images("train/panel")[0].encoded_image_string
        return cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)

    a, b = decode(numbered), decode(named)
    pictures = 3 * (3 * 97 + PANEL_GAP)  # the three pictures and their gaps
    np.testing.assert_array_equal(a[:, :pictures], b[:, :pictures])
    assert b.shape[1] > a.shape[1]  # longer names, wider legend
