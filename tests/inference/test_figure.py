"""The demo figure at 1 and 60 classes: bounded size, legend apart, one colour per class."""

import io

import cv2
import numpy as np
import pytest

from libs.inference import figure as demo_figure
from libs.utils.visualize import palette

N_CLASSES = 182
NAMES = [f"class-{i}" for i in range(N_CLASSES)]
MAX_WIDTH_PX = 2000
MAX_HEIGHT_PX = 1400


def busy_label_map(n_present, height=96, width=128, seed=0):
    """A label map holding exactly ``n_present`` classes of very unequal areas, and an image."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(N_CLASSES, n_present, replace=False)
    centres = rng.uniform([0, 0], [height, width], (n_present, 2))
    weights = rng.pareto(1.2, n_present) + 1
    yy, xx = np.mgrid[:height, :width]
    distance = np.hypot(yy[..., None] - centres[:, 0], xx[..., None] - centres[:, 1]) / weights
    label_map = ids[np.argmin(distance, axis=-1)]
    label_map.flat[:n_present] = ids  # every class owns at least one pixel
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image, label_map


def figure_for(n_present, top_k=demo_figure.TOP_K, min_share=demo_figure.MIN_SHARE):
    image, label_map = busy_label_map(n_present)
    shares = demo_figure.class_shares(label_map, N_CLASSES)
    assert len(shares) == n_present
    panels = demo_figure.panel_classes(shares, top_k, min_share)
    figure = demo_figure.build_figure(image, label_map, NAMES, shares, panels=panels)
    figure.draw_without_rendering()
    return figure, image, label_map, shares


@pytest.mark.parametrize("n_present", [1, 60])
def test_figure_is_bounded_and_the_legend_stays_in_its_own_column(n_present):
    figure, _, _, shares = figure_for(n_present)
    width, height = figure.get_size_inches() * figure.dpi
    assert width <= MAX_WIDTH_PX and height <= MAX_HEIGHT_PX
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=demo_figure.FIGURE_DPI)
    saved = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    assert saved.shape[:2] == (round(height), round(width))

    renderer = figure._get_renderer()
    legend = figure.axes[2].get_legend()
    box = legend.get_window_extent(renderer)
    assert len(legend.get_texts()) == n_present
    assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height
    panels = [ax for i, ax in enumerate(figure.axes) if i != 2]
    assert len(panels) == 2 + min(demo_figure.TOP_K, sum(
        share >= demo_figure.MIN_SHARE for _, share in shares))
    for ax in panels:
        assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        assert not box.overlaps(ax.title.get_window_extent(renderer)), ax.get_title()
    # Panels do not overlap each other either.
    extents = [ax.get_window_extent(renderer) for ax in panels]
    for i, a in enumerate(extents):
        assert 0 <= a.x0 and a.x1 <= width and 0 <= a.y0 and a.y1 <= height
        assert not any(a.overlaps(b) for b in extents[i + 1:])


@pytest.mark.parametrize("top_k, min_share", [(8, 0.005), (3, 0.0), (20, 0.02), (0, 0.0)])
def test_number_of_panels_is_top_k_above_min_share(top_k, min_share):
    figure, _, _, shares = figure_for(60, top_k=top_k, min_share=min_share)
    expected = [(i, s) for i, s in shares if s >= min_share][:top_k]
    assert len(expected) == min(top_k, sum(s >= min_share for _, s in shares))
    titles = [ax.get_title() for ax in figure.axes[3:]]
    assert titles == [demo_figure.panel_title(NAMES, i, s) for i, s in expected]
    # Classes without a panel are still in the legend.
    assert len(figure.axes[2].get_legend().get_texts()) == 60


def test_one_colour_per_class_in_legend_label_map_and_panels():
    figure, image, label_map, shares = figure_for(60)
    colours = palette(N_CLASSES)
    patches = figure.axes[2].get_legend().get_patches()
    for patch, (class_id, _) in zip(patches, shares):
        np.testing.assert_allclose(np.array(patch.get_facecolor()[:3]) * 255, colours[class_id],
                                   atol=1e-6)
    np.testing.assert_array_equal(np.asarray(figure.axes[1].images[0].get_array()),
                                  colours[label_map])
    for ax, (class_id, _) in zip(figure.axes[3:], shares):
        picture = np.asarray(ax.images[0].get_array())
        assert (picture[label_map == class_id] == colours[class_id]).all()
        np.testing.assert_array_equal(
            picture, demo_figure.class_panel_picture(image, label_map == class_id,
                                                     colours[class_id]))


def test_legend_says_share_and_marks_tiny_classes():
    assert demo_figure.legend_label("sky", 0.4187) == "sky  41.9%"
    assert demo_figure.legend_label("sky", 0.0001) == "sky  <0.1%"
    long_name = demo_figure.legend_label("x" * 40, 0.5)
    assert len(long_name.split("  ")[0]) == demo_figure.MAX_NAME_CHARS


@pytest.mark.parametrize("n_classes, dtype", [(182, np.uint8), (256, np.uint16), (300, np.uint16)])
def test_save_label_png_keeps_every_class_index(tmp_path, n_classes, dtype):
    rng = np.random.default_rng(0)
    label_map = rng.integers(0, n_classes, (13, 17))
    label_map[0, 0] = n_classes - 1
    path = demo_figure.save_label_png(label_map, tmp_path / "labels.png", n_classes)
    saved = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == dtype and saved.shape == (13, 17)
    np.testing.assert_array_equal(saved, label_map)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]


def test_default_output_path_is_in_the_given_folder():
    assert str(demo_figure.default_output_path("data/x/photo.jpg")) == "photo_segmentation.png"
    assert demo_figure.default_output_path("a/photo.jpg", "out") == \
        demo_figure.Path("out/photo_segmentation.png")
