"""libs/utils/visualize.py: an ignored colour no class has, the OpenCV legend, text that scales."""

import numpy as np
import pytest

from libs.utils import visualize
from libs.utils.visualize import (IGNORE_COLOUR, IGNORE_NAME, colorize, legend_entries, palette,
                                  side_by_side, text_style)


@pytest.mark.parametrize("n_classes", [8, 21, 182])
def test_the_ignored_colour_is_no_class_colour(n_classes):
    colours = palette(n_classes)
    assert len({tuple(c) for c in colours}) == n_classes  # one colour per class
    assert tuple(IGNORE_COLOUR) not in {tuple(int(v) for v in c) for c in colours}
    # Not only different: far from every class colour (black, the old choice, is 32 from one).
    distance = np.sqrt(((colours.astype(float) - IGNORE_COLOUR) ** 2).sum(1)).min()
    assert distance > 70
    label = np.array([[0, n_classes - 1], [255, 255]])
    out = colorize(label, n_classes, ignore_label=255)
    assert out[1].tolist() == [list(IGNORE_COLOUR)] * 2
    assert out[0].tolist() == [colours[0].tolist(), colours[n_classes - 1].tolist()]


def test_no_class_colour_has_a_channel_at_255():
    # The scheme gives red and green multiples of 32, blue multiples of 32, below 2**9 classes,
    # and a channel at 255 needs all eight bit rounds (class 2**24 - 2): check the cheap bound.
    colours = palette(511)
    assert not (colours == 255).any()
    assert tuple(IGNORE_COLOUR) == (255, 255, 255)


def test_legend_entries_largest_first_capped_with_more_and_ignored():
    names = [f"c{i}" for i in range(12)]
    colours = palette(12)
    label = np.repeat(np.arange(12), np.arange(1, 13))  # class i covers i + 1 pixels
    entries = legend_entries(label, names, colours, max_rows=4)
    assert [name for name, _ in entries] == ["c11", "c10", "c9", "+9 more"]
    assert entries[0][1] == tuple(int(v) for v in colours[11]) and entries[-1][1] is None
    small = np.array([3, 3, 255, 1])
    entries = legend_entries(small, names, colours, ignore_label=255)
    assert [name for name, _ in entries] == ["c3", "c1", IGNORE_NAME]
    assert entries[-1][1] == IGNORE_COLOUR


def cap_height(image):
    rows = np.flatnonzero((image > 127).any(axis=1))
    return rows.max() - rows.min() + 1


@pytest.mark.parametrize("height, width", [(120, 160), (480, 640), (1080, 1920), (1920, 1080)])
def test_text_size_follows_the_shorter_side_within_bounds(height, width):
    import cv2

    style = text_style(height, width)
    image = np.zeros((3 * style.text_height + 10, 40 * style.text_height), np.uint8)
    cv2.putText(image, "HELLO", (5, 2 * style.text_height), visualize.FONT, style.scale, 255,
                style.thickness, cv2.LINE_AA)
    drawn = cap_height(image)
    shorter = min(height, width)
    assert drawn >= visualize.MIN_TEXT_PIXELS - 1  # readable on the smallest frames
    if shorter * visualize.TEXT_SHARE >= visualize.MIN_TEXT_PIXELS:
        assert 0.02 <= drawn / shorter <= 0.045  # proportional on larger ones
    assert style.row > style.text_height and style.margin >= 2


def test_side_by_side_enlarges_by_a_whole_factor_with_nearest_labels():
    label = np.arange(97 * 97).reshape(97, 97) % 8
    colours = colorize(label, 8)
    photo = np.full((97, 97, 3), 100, np.uint8)
    entries = legend_entries(label, [f"c{i}" for i in range(8)], palette(8))
    panel = side_by_side([photo, colours], ["image", "labels"], entries, nearest=[False, True])
    style = text_style(291, 291)
    header = style.text_height + 2 * style.margin
    assert panel.shape[0] == header + 291  # factor 3: the smallest giving >= 256
    x = 291 + visualize.PANEL_GAP
    np.testing.assert_array_equal(panel[header:, x:x + 291],
                                  np.kron(colours, np.ones((3, 3, 1), np.uint8)))
    legend = panel[header:, 2 * x:]
    for colour in palette(8):
        assert (legend == colour).all(axis=2).sum() >= style.text_height ** 2 // 2


def test_data_figure_names_the_synthetic_set_and_shows_ignored_in_its_colour(toy_cfg):
    from docs.make_data_figure import data_figure

    figure = data_figure(toy_cfg, 2, config_path="config/toy.yaml")
    title = figure._suptitle.get_text().splitlines()
    assert title[0] == ("Synthetic COCO-Stuff-format set (config/toy.yaml): "
                        "training batch after augmentation")
    assert "ignored pixels white" in title[1]
    legend = figure.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[-1] == IGNORE_NAME
    patch = legend.legend_handles[-1]
    assert tuple(round(c * 255) for c in patch.get_facecolor()[:3]) == IGNORE_COLOUR
    # The legend's class patches are the palette, and no class patch is the ignored colour.
    faces = [tuple(round(c * 255) for c in h.get_facecolor()[:3]) for h in legend.legend_handles]
    assert faces[:-1] == [tuple(int(v) for v in c) for c in palette(8)]
    assert IGNORE_COLOUR not in faces[:-1]
