"""The COCO-Stuff readers, the transforms and the synthetic dataset, on generated fixtures."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from addict import Dict
from click.testing import CliRunner
from torch.utils.data import DataLoader

from libs.datasets import CocoStuff10k, CocoStuff164k, build_dataset, ensure_synthetic, generate_synthetic, load_class_names, resize_labels_torch, to_rgb_uint8
from libs.utils.errors import DatasetError
from libs.cli import synthetic as synthetic_cli
from libs.datasets.synthetic import Sizes
from libs.datasets.transforms import Transform, augment, draw_scale, resize_label
from libs.utils.config import load_config

REPO = Path(__file__).resolve().parents[2]
MEAN = (104.008, 116.669, 122.675)
IGNORE = 255
CAFFE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)  # DeepLab v2's train.prototxt


def dataset_kwargs(n_classes=182, skip_bad_samples=False, **overrides):
    settings = dict(
        ignore_label=IGNORE,
        mean_bgr=MEAN,
        augment=False,
        crop_size=33,
        test_size=513,
        scale_choices=CAFFE_SCALES,
        scale_range=None,
        flip=True,
        eval_original_size=False,
        seed=0,
    )
    settings.update(overrides)
    return dict(n_classes=n_classes, transform=Transform(**settings),
                skip_bad_samples=skip_bad_samples)


def write_jpeg(path, image, quality=95):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(data.tobytes())


def constant_image(height, width, bgr):
    return np.broadcast_to(np.array(bgr, np.uint8), (height, width, 3)).copy()


def make_10k(root, samples, lists=None):
    """COCO-Stuff 10k layout from ``{id: (bgr uint8 image, S map)}``; lists default train=all."""
    for sub in ("images", "annotations", "imageLists"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (image, s) in samples.items():
        write_jpeg(root / "images" / f"{image_id}.jpg", image)
        scipy.io.savemat(root / "annotations" / f"{image_id}.mat", {"S": s})
    lists = lists or {"train": list(samples), "test": list(samples), "all": list(samples)}
    for name, ids in lists.items():
        (root / "imageLists" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def offset_s_map(height=30, width=40):
    """S values 0 (unlabeled), 1 and 182 in known places."""
    s = np.full((height, width), 1, np.uint16)
    s[:, width // 2 :] = 182
    s[: height // 3] = 0
    return s


# --------------------------------------------------------------------------- resize


def centre_nearest_reference(label, size):
    """The definition, pixel by pixel: source = floor((dst + 0.5) * src / dst)."""
    height, width = size
    out = np.empty((height, width), label.dtype)
    for y in range(height):
        for x in range(width):
            sy = int(np.floor((y + 0.5) * label.shape[0] / height))
            sx = int(np.floor((x + 0.5) * label.shape[1] / width))
            out[y, x] = label[sy, sx]
    return out


@pytest.mark.parametrize("size", [(13, 17), (7, 5), (41, 41), (26, 34), (3, 50)])
def test_resize_label_matches_the_centre_aligned_formula(size):
    label = np.random.default_rng(0).integers(0, 182, (13, 17)).astype(np.int64)
    expected = centre_nearest_reference(label, size)
    np.testing.assert_array_equal(resize_label(label, size), expected)
    batch = torch.from_numpy(np.stack([label, label[::-1].copy()]))
    resized = resize_labels_torch(batch, size)
    assert resized.dtype == torch.int64 and resized.shape == (2, *size)
    np.testing.assert_array_equal(resized[0].numpy(), expected)
    np.testing.assert_array_equal(resized[1].numpy(), centre_nearest_reference(label[::-1], size))
    np.testing.assert_array_equal(resize_labels_torch(batch[0], size).numpy(), expected)


def test_cv2_inter_nearest_is_not_centre_aligned():
    """Why resize_label exists: OpenCV's nearest picks different source pixels."""
    label = np.arange(12 * 12, dtype=np.uint8).reshape(12, 12)
    cv2_nearest = cv2.resize(label, (9, 9), interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(cv2_nearest, resize_label(label, (9, 9)))


def test_label_resize_stays_aligned_with_bilinear_image_resize():
    """A square drawn into both; after resizing, labels agree with the clear image pixels."""
    indicator = np.zeros((24, 24), np.float32)
    indicator[6:15, 9:20] = 1.0
    label = indicator.astype(np.int64)
    for size in [(9, 9), (16, 10), (41, 37), (7, 31)]:
        image = cv2.resize(indicator, size[::-1], interpolation=cv2.INTER_LINEAR)
        clear = (image > 0.75) | (image < 0.25)
        ours = resize_label(label, size)
        assert np.array_equal(ours[clear], (image[clear] > 0.5).astype(np.int64)), size
    # The top-left-biased nearest resize fails the same check.
    image = cv2.resize(indicator, (9, 9), interpolation=cv2.INTER_LINEAR)
    clear = (image > 0.75) | (image < 0.25)
    biased = cv2.resize(label.astype(np.uint8), (9, 9), interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(biased[clear], (image[clear] > 0.5).astype(np.uint8))


# --------------------------------------------------------------------------- 10k reader


def test_10k_eval_sample_offsets_labels_subtracts_mean_and_warps_to_513(tmp_path):
    bgr = (10, 120, 250)
    s = offset_s_map()
    root = make_10k(tmp_path / "10k", {"COCO_train2014_000000000077": (constant_image(30, 40, bgr), s)})
    ds = CocoStuff10k(root, "test", **dataset_kwargs())
    image_id, image, label = ds[0]
    assert image_id == "COCO_train2014_000000000077"
    assert image.dtype == torch.float32 and image.shape == (3, 513, 513)
    assert label.dtype == torch.int64 and label.shape == (513, 513)
    expected_pixel = np.array(bgr, np.float32) - np.array(MEAN, np.float32)
    np.testing.assert_allclose(image.mean(dim=(1, 2)).numpy(), expected_pixel, atol=1.5)
    expected = np.where(s == 0, IGNORE, s.astype(np.int64) - 1)
    np.testing.assert_array_equal(label.numpy(), resize_label(expected, (513, 513)))
    assert set(label.unique().tolist()) == {0, 181, IGNORE}


def test_10k_original_size_option_keeps_annotation_resolution(tmp_path):
    s = offset_s_map(30, 40)
    root = make_10k(tmp_path / "10k", {"a": (constant_image(30, 40, (50, 60, 70)), s)})
    ds = CocoStuff10k(root, "test", **dataset_kwargs(eval_original_size=True))
    _, image, label = ds[0]
    assert image.shape == (3, 30, 40) and label.shape == (30, 40)
    np.testing.assert_array_equal(label.numpy(), np.where(s == 0, IGNORE, s.astype(np.int64) - 1))


def test_to_rgb_uint8_inverts_mean_subtraction_and_channel_order(synthetic_root):
    ds = CocoStuff10k(synthetic_root, "test", **dataset_kwargs(n_classes=8, eval_original_size=True))
    image_id, image, _ = ds[0]
    rgb = to_rgb_uint8(image, Dict(B=MEAN[0], G=MEAN[1], R=MEAN[2]))
    decoded = cv2.imread(str(synthetic_root / "images" / f"{image_id}.jpg"))
    assert rgb.dtype == np.uint8 and rgb.shape == decoded.shape
    np.testing.assert_array_equal(rgb, decoded[:, :, ::-1])
    np.testing.assert_array_equal(to_rgb_uint8(image.numpy(), MEAN), rgb)


# --------------------------------------------------------------------------- 164k reader


def make_164k(root, split="val2017", n=2, height=24, width=32):
    rng = np.random.default_rng(1)
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    labels = {}
    for k in range(n):
        image_id = f"{k + 139:012d}"
        label = rng.integers(0, 182, (height, width)).astype(np.uint8)
        label[:4] = 255
        write_jpeg(root / "images" / split / f"{image_id}.jpg", constant_image(height, width, (90, 90, 90)))
        cv2.imwrite(str(root / "annotations" / split / f"{image_id}.png"), label)
        labels[image_id] = label
    return root, labels


def test_164k_reads_png_labels_unchanged_with_255_ignored(tmp_path):
    root, labels = make_164k(tmp_path / "164k")
    ds = CocoStuff164k(root, "val2017", **dataset_kwargs(eval_original_size=True))
    assert ds.ids == sorted(labels)
    image_id, image, label = ds[1]
    assert image.shape == (3, 24, 32) and label.dtype == torch.int64
    np.testing.assert_array_equal(label.numpy(), labels[image_id].astype(np.int64))
    assert (label[:4] == IGNORE).all()
    warped = CocoStuff164k(root, "val2017", **dataset_kwargs(test_size=65))[0]
    assert warped[1].shape == (3, 65, 65) and warped[2].shape == (65, 65)
    train = CocoStuff164k(root, "val2017", **dataset_kwargs(augment=True, crop_size=33))
    assert train[0][1].shape == (3, 33, 33) and train[0][2].shape == (33, 33)


def test_164k_missing_png_and_missing_split_are_clear(tmp_path):
    root, labels = make_164k(tmp_path / "164k")
    png = root / "annotations" / "val2017" / f"{sorted(labels)[0]}.png"
    png.unlink()
    ds = CocoStuff164k(root, "val2017", **dataset_kwargs())
    with pytest.raises(DatasetError, match=re.escape(f"{png}: annotation file not found")):
        ds[0]
    other = root / "annotations" / "val2017" / f"{sorted(labels)[1]}.png"
    other.write_bytes(other.read_bytes()[:20])
    with pytest.raises(DatasetError, match=re.escape(f"{other}: corrupt annotation")):
        ds[1]
    with pytest.raises(DatasetError, match=r"images/train2017: image directory not found"):
        CocoStuff164k(root, "train2017", **dataset_kwargs())


def test_164k_build_dataset_resolves_split_names(tmp_path, toy_cfg):
    root, _ = make_164k(tmp_path / "164k", split="val2017")
    toy_cfg.DATASET.NAME = "cocostuff164k"
    toy_cfg.DATASET.ROOT = str(root)
    toy_cfg.DATASET.SYNTHETIC = None
    toy_cfg.DATASET.LABELS = str(REPO / "data" / "cocostuff-labels.txt")
    toy_cfg.DATASET.N_CLASSES = 182
    toy_cfg.DATASET.SPLIT.TEST = "val2017"
    ds = build_dataset(toy_cfg, "test", augment=False)
    assert isinstance(ds, CocoStuff164k) and ds.split == "val2017" and len(ds) == 2
    assert len(ds.class_names) == 182 and ds.class_names[0] == "person"


# --------------------------------------------------------------------------- augmentation


def asymmetric_scene(height=40, width=60):
    """An 'L' shape (not symmetric under flips) drawn into the image and the label."""
    mask = np.zeros((height, width), bool)
    mask[8:30, 10:18] = True
    mask[22:30, 10:40] = True
    image = np.where(mask[:, :, None], 100.0, -100.0).astype(np.float32) * np.ones(3, np.float32)
    return image, mask.astype(np.int64)


@pytest.mark.parametrize("scales", [dict(scale_choices=CAFFE_SCALES), dict(scale_range=(0.5, 1.5))])
def test_augmentation_keeps_image_and_label_aligned_through_scale_pad_crop_flip(scales):
    image, label = asymmetric_scene()
    crop = 45  # larger than the smaller scales: exercises the padding
    flipped = padded = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        out_image, out_label = augment(image, label, rng, Transform(crop_size=crop, flip=True,
                                                                    ignore_label=IGNORE, **scales))
        assert out_image.shape == (crop, crop, 3) and out_label.shape == (crop, crop)
        pad = out_label == IGNORE
        padded += pad.any()
        assert np.all(out_image[pad] == 0)  # the mean colour, after mean subtraction
        value = out_image[:, :, 0]
        clear = ~pad & (np.abs(value) > 50)
        assert np.array_equal(out_label[clear], (value[clear] > 0).astype(np.int64)), seed
        # The L's foot points right unless flipped: compare mass left/right of its stem.
        rows, cols = np.nonzero(out_label == 1)
        if rows.size:
            stem_col = cols[rows == rows.min()].mean()
            flipped += cols.mean() < stem_col
    assert flipped > 5 and padded > 5


def rescaled_extent(rng, **scales):
    """(rows, cols) that a fully labelled 20x28 picture covers after augment's rescale.

    The crop (64) exceeds every rescaled size, so the whole picture survives at the
    top-left (or top-right if flipped) of the padding, and its extent is the size it
    was resized to.
    """
    label = np.zeros((20, 28), np.int64)
    image = np.zeros((20, 28, 3), np.float32)
    _, out = augment(image, label, rng,
                     Transform(crop_size=64, flip=True, ignore_label=IGNORE, **scales))
    valid = out != IGNORE
    return int(valid.any(axis=1).sum()), int(valid.any(axis=0).sum())


# 20x28 at 0.5, 0.75, 1, 1.25, 1.5, by hand: every product is a whole number.
CAFFE_SIZES_20x28 = [(10, 14), (15, 21), (20, 28), (25, 35), (30, 42)]


def test_discrete_scales_are_drawn_uniformly_and_nothing_else_appears():
    n = 2500
    counts = {}
    for index in range(n):
        rng = np.random.default_rng((0, 0, index))  # the dataset's per-sample generator
        size = rescaled_extent(rng, scale_choices=CAFFE_SCALES)
        counts[size] = counts.get(size, 0) + 1
    assert sorted(counts) == CAFFE_SIZES_20x28
    # 500 expected each; the binomial spread is 20, so 100 is five standard deviations.
    assert all(abs(c - n / 5) < 100 for c in counts.values()), counts


def test_discrete_scale_is_the_generators_first_integer_draw():
    """The choice is ``choices[rng.integers(len(choices))]``, the first draw of the sample."""
    for index in range(40):
        pick = np.random.default_rng((3, 1, index)).integers(len(CAFFE_SCALES))
        rng = np.random.default_rng((3, 1, index))
        assert rescaled_extent(rng, scale_choices=CAFFE_SCALES) == CAFFE_SIZES_20x28[pick]
        assert draw_scale(np.random.default_rng((3, 1, index)), CAFFE_SCALES) == CAFFE_SCALES[pick]


def test_scale_range_still_draws_a_continuous_scale():
    heights = set()
    for index in range(200):
        scale = np.random.default_rng((0, 0, index)).uniform(0.5, 1.5)
        rng = np.random.default_rng((0, 0, index))
        height, width = rescaled_extent(rng, scale_range=(0.5, 1.5))
        assert (height, width) == (round(20 * scale), round(28 * scale)), index
        assert 10 <= height <= 30 and 14 <= width <= 42
        heights.add(height)
    assert len(heights) > 15  # far more than five discrete sizes
    # A degenerate range is a fixed scale.
    assert rescaled_extent(np.random.default_rng(0), scale_range=(1.25, 1.25)) == (25, 35)


@pytest.mark.parametrize(
    "choices, value_range, message",
    [
        (None, None, "exactly one of scale_choices and scale_range"),
        (CAFFE_SCALES, (0.5, 1.5), "exactly one of scale_choices and scale_range"),
        ((), None, "scales must be positive numbers, got []"),
        ((0.5, 0.0), None, "scales must be positive numbers, got [0.5, 0.0]"),
        (None, (-0.5, 1.5), "scales must be positive numbers, got [-0.5, 1.5]"),
        (None, (1.5, 0.5), "scale_range must be (low, high) with low <= high, got [1.5, 0.5]"),
        (None, (0.5, 1.0, 1.5), "scale_range must be (low, high)"),
    ],
)
def test_scale_sources_other_than_exactly_one_valid_are_refused(choices, value_range, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Transform(crop_size=4, ignore_label=IGNORE, scale_choices=choices, scale_range=value_range)
    image, label = np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.int64)
    with pytest.raises(ValueError, match=re.escape(message)):
        augment(image, label, np.random.default_rng(0), Transform(
            crop_size=4, flip=False, ignore_label=IGNORE, scale_choices=choices,
            scale_range=value_range))


def test_dataset_refuses_a_bad_scale_pair_when_built(synthetic_root):
    with pytest.raises(DatasetError, match=re.escape("augmentation scales: give exactly one")):
        CocoStuff10k(synthetic_root, "train", **dataset_kwargs(n_classes=8, scale_range=(0.5, 1.5)))
    image, label = np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.int64)
    with pytest.raises(TypeError):  # a positional list can never be taken for a range
        augment(image, label, np.random.default_rng(0), (0.5, 1.5), 4, True, IGNORE)


def test_build_dataset_passes_whichever_scale_key_is_set(toy_cfg):
    assert toy_cfg.AUGMENTATION.SCALE_CHOICES == list(CAFFE_SCALES)
    ds = build_dataset(toy_cfg, "train", augment=True)
    assert ds.transform.scale_choices == CAFFE_SCALES and ds.transform.scale_range is None
    toy_cfg.AUGMENTATION.SCALE_CHOICES = None
    toy_cfg.AUGMENTATION.SCALE_RANGE = [0.75, 1.25]
    ds = build_dataset(toy_cfg, "train", augment=True)
    assert ds.transform.scale_choices is None and ds.transform.scale_range == (0.75, 1.25)


def test_data_figure_title_names_the_scales_that_are_set(toy_cfg):
    from docs.make_data_figure import scaling_words

    assert scaling_words(toy_cfg.AUGMENTATION) == "random scaling by one of 0.5, 0.75, 1, 1.25, 1.5"
    toy_cfg.AUGMENTATION.SCALE_CHOICES = None
    toy_cfg.AUGMENTATION.SCALE_RANGE = [0.5, 1.5]
    assert scaling_words(toy_cfg.AUGMENTATION) == "random scaling 0.5-1.5"


def test_augmentation_is_deterministic_per_seed_epoch_and_index(synthetic_root):
    ds = CocoStuff10k(synthetic_root, "train", **dataset_kwargs(n_classes=8, augment=True, crop_size=33))
    first = ds[2]
    again = ds[2]
    assert torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])
    ds.set_epoch(1)
    assert not torch.equal(first[1], ds[2][1])
    ds.set_epoch(0)
    other_seed = CocoStuff10k(synthetic_root, "train", **dataset_kwargs(n_classes=8, augment=True, crop_size=33, seed=1))
    assert not torch.equal(first[1], other_seed[2][1])
    # Worker processes and batch order change nothing.
    serial = [ds[i] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    images = torch.cat([b[1] for b in batches])
    labels = torch.cat([b[2] for b in batches])
    assert torch.equal(images, torch.stack([s[1] for s in serial]))
    assert torch.equal(labels, torch.stack([s[2] for s in serial]))


def test_toy_cfg_training_batches_collate_to_crop_size(toy_cfg):
    ds = build_dataset(toy_cfg, "train", augment=True)
    assert len(ds) == 12 and ds.class_names == load_class_names(REPO / "data" / "synthetic-labels.txt")
    ids, images, labels = next(iter(DataLoader(ds, batch_size=4)))
    crop = toy_cfg.IMAGE.SIZE.TRAIN
    assert len(ids) == 4 and images.shape == (4, 3, crop, crop) and labels.shape == (4, crop, crop)
    values = set(labels.unique().tolist())
    assert values <= set(range(8)) | {IGNORE} and len(values) > 2
    test = build_dataset(toy_cfg, "test", augment=False)
    size = toy_cfg.IMAGE.SIZE.TEST
    assert len(test) == 4 and test[0][1].shape == (3, size, size)


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def copy_of_synthetic(synthetic_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    ids = (root / "imageLists" / "train.txt").read_text().split()
    return root, ids


def train_set(root, **overrides):
    return CocoStuff10k(root, "train", **dataset_kwargs(n_classes=8, **overrides))


def test_truncated_jpeg_is_reported_as_corrupt(copy_of_synthetic):
    root, ids = copy_of_synthetic
    jpg = root / "images" / f"{ids[0]}.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(DatasetError, match=re.escape(f"{jpg}: corrupt image")):
        train_set(root)[0]


def test_truncated_jpeg_is_caught_even_by_a_lenient_decoder(copy_of_synthetic, monkeypatch):
    """OpenCV 4.x decodes a truncated JPEG into a grey-filled picture without failing."""
    root, ids = copy_of_synthetic
    jpg = root / "images" / f"{ids[0]}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:-40])
    monkeypatch.setattr(cv2, "imdecode", lambda data, flags: np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(DatasetError, match=re.escape(f"{jpg}: corrupt image (truncated JPEG")):
        train_set(root)[0]


def test_garbage_image_is_reported_as_corrupt(copy_of_synthetic):
    root, ids = copy_of_synthetic
    jpg = root / "images" / f"{ids[1]}.jpg"
    jpg.write_bytes(b"not a picture at all")
    with pytest.raises(DatasetError, match=re.escape(f"{jpg}: corrupt image")):
        train_set(root)[1]


def test_missing_image_names_the_file(copy_of_synthetic):
    root, ids = copy_of_synthetic
    jpg = root / "images" / f"{ids[0]}.jpg"
    jpg.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{jpg}: image file not found")):
        train_set(root)[0]


def test_missing_mat_names_the_file(copy_of_synthetic):
    root, ids = copy_of_synthetic
    mat = root / "annotations" / f"{ids[0]}.mat"
    mat.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: annotation file not found")):
        train_set(root)[0]


def test_mat_without_key_s_names_the_file(copy_of_synthetic):
    root, ids = copy_of_synthetic
    mat = root / "annotations" / f"{ids[0]}.mat"
    scipy.io.savemat(mat, {"labels": np.zeros((64, 80), np.uint8)})
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: annotation has no key 'S'")):
        train_set(root)[0]


def test_corrupt_mat_names_the_file(copy_of_synthetic):
    root, ids = copy_of_synthetic
    mat = root / "annotations" / f"{ids[0]}.mat"
    mat.write_bytes(mat.read_bytes()[:150])
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: corrupt annotation")):
        train_set(root)[0]


def test_labels_beyond_n_classes_and_size_mismatch_are_clear(copy_of_synthetic):
    root, ids = copy_of_synthetic
    mat = root / "annotations" / f"{ids[0]}.mat"
    s = np.ones((64, 80), np.uint8)
    s[5, 5] = 9  # class 8 in an 8-class dataset
    scipy.io.savemat(mat, {"S": s})
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: label 9 outside 1..8 (DATASET.N_CLASSES=8, class c stored as c+1; unlabeled: 0)")):
        train_set(root)[0]
    scipy.io.savemat(mat, {"S": np.ones((10, 10), np.uint8)})
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: label map is 10x10 but {ids[0]}.jpg is 80x64 (width x height)")):
        train_set(root)[0]


def test_empty_or_missing_image_list_or_root(copy_of_synthetic, tmp_path):
    root, _ = copy_of_synthetic
    listing = root / "imageLists" / "train.txt"
    listing.write_text("\n  \n")
    with pytest.raises(DatasetError, match=re.escape(f"{listing}: image list is empty")):
        train_set(root)
    listing.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{listing}: image list not found")):
        train_set(root)
    with pytest.raises(DatasetError, match="dataset root not found"):
        train_set(tmp_path / "nowhere")


def test_skip_mode_replaces_bad_samples_and_counts_them(copy_of_synthetic):
    root, ids = copy_of_synthetic
    (root / "images" / f"{ids[1]}.jpg").unlink()
    (root / "annotations" / f"{ids[2]}.mat").write_bytes(b"junk")
    ds = train_set(root, skip_bad_samples=True, augment=True)
    with pytest.warns(UserWarning) as record:
        image_id, image, _ = ds[1]
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 and f"{ids[1]}.jpg: image file not found" in messages[0]
    assert f"{ids[2]}.mat: corrupt annotation" in messages[1]
    assert image_id == ids[3] and ds.n_skipped == 2  # ids[2] was bad too
    assert set(ds.bad_samples) == {ids[1], ids[2]}
    assert ds[2][0] == ids[3] and ds.n_skipped == 2  # counted once per file
    good = train_set(root, augment=True)
    assert torch.equal(ds[3][1], good[3][1])  # good samples are untouched
    assert len([s for s in DataLoader(ds, batch_size=1)]) == len(ids)
    assert set(train_set(root, skip_bad_samples=True).check_all()) == {ids[1], ids[2]}
    with pytest.raises(DatasetError, match=re.escape(f"{ids[1]}.jpg: image file not found")):
        good.check_all()


def test_skip_mode_with_no_readable_sample_is_an_error(copy_of_synthetic):
    root, ids = copy_of_synthetic
    shutil.rmtree(root / "images")
    ds = train_set(root, skip_bad_samples=True)
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no readable sample"):
        ds[0]
    assert ds.n_skipped == len(ids)


def test_class_names_and_their_errors(tmp_path, toy_cfg):
    assert load_class_names(REPO / "data" / "synthetic-labels.txt") == [
        "grass", "water", "sand", "ball", "crate", "kite", "cloud", "tile"
    ]
    assert len(load_class_names(REPO / "data" / "cocostuff-labels.txt")) == 182
    bad = tmp_path / "labels.txt"
    bad.write_text("0\tsky\n2\tsea\n")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: line 2: expected id 1, got 2")):
        load_class_names(bad)
    with pytest.raises(DatasetError, match="class-name file not found"):
        load_class_names(tmp_path / "none.txt")
    toy_cfg.DATASET.N_CLASSES = 9
    with pytest.raises(DatasetError, match="8 class names but DATASET.N_CLASSES is 9"):
        build_dataset(toy_cfg, "train", augment=True)


# --------------------------------------------------------------------------- synthetic


def tree_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_byte_deterministic_and_seed_dependent(tmp_path):
    a = generate_synthetic(tmp_path / "a", Sizes(3, 2, 32, 40), seed=5)
    b = generate_synthetic(tmp_path / "b", Sizes(3, 2, 32, 40), seed=5)
    c = generate_synthetic(tmp_path / "c", Sizes(3, 2, 32, 40), seed=6)
    assert tree_bytes(a) == tree_bytes(b)
    assert tree_bytes(a) != tree_bytes(c)
    assert not list(tmp_path.glob(".*tmp*"))  # no staging directory left behind


def test_generated_dataset_has_10k_layout_and_eight_classes(synthetic_root):
    lists = {n: (synthetic_root / "imageLists" / f"{n}.txt").read_text().split() for n in ("train", "test", "all")}
    assert len(lists["train"]) == 12 and len(lists["test"]) == 4
    assert sorted(lists["all"]) == sorted(lists["train"] + lists["test"])
    assert all(re.fullmatch(r"COCO_train2014_\d{12}", i) for i in lists["train"])
    assert all(re.fullmatch(r"COCO_val2014_\d{12}", i) for i in lists["test"])
    seen = set()
    for image_id in lists["all"]:
        image = cv2.imread(str(synthetic_root / "images" / f"{image_id}.jpg"))
        s = scipy.io.loadmat(synthetic_root / "annotations" / f"{image_id}.mat")["S"]
        assert image.shape == (64, 80, 3) and s.shape == (64, 80)
        assert 0 < (s == 0).mean() < 0.2  # a thin unlabeled outline band
        seen |= set(np.unique(s).tolist())
    assert seen == set(range(9))  # unlabeled + 8 classes, nothing else


def test_synthetic_classes_differ_in_colour(tmp_path):
    """Mean colour per class over a few images: every pair is far apart."""
    root = generate_synthetic(tmp_path / "s", Sizes(20, 1, 64, 64), seed=3)
    sums = np.zeros((8, 3)); counts = np.zeros(8)
    for image_id in (root / "imageLists" / "all.txt").read_text().split():
        image = cv2.imread(str(root / "images" / f"{image_id}.jpg")).astype(np.float64)
        s = scipy.io.loadmat(root / "annotations" / f"{image_id}.mat")["S"].astype(int) - 1
        for c in range(8):
            sums[c] += image[s == c].sum(0); counts[c] += (s == c).sum()
    means = sums / counts[:, None]
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(8, dtype=bool)].min() > 40


def test_generator_cli_and_refusal_to_overwrite(tmp_path):
    runner = CliRunner()
    args = ["--root", str(tmp_path / "cli"), "--n-train", "2", "--n-test", "1", "--height", "16", "--width", "20", "--seed", "1"]
    result = runner.invoke(synthetic_cli.main, args)
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "cli" / "imageLists" / "all.txt").read_text().split()) == 3
    again = runner.invoke(synthetic_cli.main, args)
    assert again.exit_code != 0
    assert f"{tmp_path / 'cli'}: already exists and is not empty; add --force" in again.output
    forced = runner.invoke(synthetic_cli.main, args[:-1] + ["2", "--force"])  # another seed
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "cli" / "synthetic.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]  # nothing left aside
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    refused = runner.invoke(synthetic_cli.main, ["--root", str(mine)] + args[2:] + ["--force"])
    assert refused.exit_code != 0 and "holds no synthetic.json" in refused.output
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    help_text = subprocess.run(
        [sys.executable, "-m", "libs.cli.synthetic", "-h"], cwd=REPO, capture_output=True, text=True
    )
    assert help_text.returncode == 0 and "--n-train" in help_text.stdout


@pytest.mark.parametrize("layout, split_list", [
    ("voc12", "ImageSets/SegmentationAug/train_aug.txt"),
    ("folder", "lists/val.txt"),
])
def test_generator_cli_writes_the_other_layouts(tmp_path, layout, split_list):
    root = tmp_path / layout
    args = ["--root", str(root), "--n-train", "2", "--n-test", "1", "--height", "16",
            "--width", "20", "--seed", "1", "--layout", layout]
    result = CliRunner().invoke(synthetic_cli.main, args)
    assert result.exit_code == 0, result.output
    assert f"({layout} layout)" in result.output
    n_expected = 2 if layout == "voc12" else 1  # train_aug pairs; held-out ids
    assert len((root / split_list).read_text().splitlines()) == n_expected
    assert json.loads((root / "synthetic.json").read_text())["layout"] == layout
    bad = CliRunner().invoke(synthetic_cli.main, args[:-1] + ["coco"])
    assert bad.exit_code != 0 and "--layout" in bad.output


def test_ensure_synthetic_generates_once_and_checks_sizes(toy_cfg, tmp_path):
    root = tmp_path / "fresh" / "synthetic"
    toy_cfg.DATASET.ROOT = str(root)
    toy_cfg.DATASET.SYNTHETIC = Dict(N_TRAIN=2, N_TEST=1, HEIGHT=16, WIDTH=24)
    assert ensure_synthetic(toy_cfg.DATASET, toy_cfg.EXP.SEED) == root
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    ds = build_dataset(toy_cfg, "train", augment=False)  # reuses it
    assert len(ds) == 2 and (root / "synthetic.json").stat().st_mtime_ns == stamp
    toy_cfg.DATASET.SYNTHETIC.N_TRAIN = 3
    with pytest.raises(DatasetError, match=re.escape(f"delete {root} to regenerate")):
        ensure_synthetic(toy_cfg.DATASET, toy_cfg.EXP.SEED)
    toy_cfg.DATASET.SYNTHETIC = None
    assert ensure_synthetic(toy_cfg.DATASET, toy_cfg.EXP.SEED) is None


def test_ensure_synthetic_refuses_a_foreign_directory(toy_cfg, tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    toy_cfg.DATASET.ROOT = str(root)
    with pytest.raises(DatasetError, match="holds no synthetic.json"):
        ensure_synthetic(toy_cfg.DATASET, toy_cfg.EXP.SEED)
    assert (root / "thesis.tex").read_text() == "precious"


def test_real_configs_build_the_expected_dataset_class(tmp_path):
    cfg = Dict(load_config(REPO / "config" / "cocostuff.yaml").to_dict())
    cfg.DATASET.ROOT = str(make_10k(tmp_path / "10k", {"x": (constant_image(20, 20, (1, 2, 3)), offset_s_map(20, 20))}))
    ds = build_dataset(cfg, "train", augment=True)
    assert isinstance(ds, CocoStuff10k)
    _, image, label = ds[0]
    assert image.shape == (3, 321, 321) and label.shape == (321, 321)
    assert build_dataset(cfg, "test", augment=False)[0][1].shape == (3, 513, 513)


def test_generation_removes_what_a_killed_generation_left(tmp_path):
    """A generation killed mid-way leaves its hidden staging folder; the next one removes it
    (only this program's pattern, only folders older than the process)."""
    import os

    stale = tmp_path / ".synthetic.tmp-a1b2c3d4"
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "x.jpg").write_bytes(b"partial")
    foreign = tmp_path / ".synthetic.tmp-keep"  # not 8 characters: not ours
    foreign.mkdir()
    for path in (stale / "images" / "x.jpg", stale / "images", stale, foreign):
        os.utime(path, (1e9, 1e9))  # 2001: older than this process
    generate_synthetic(tmp_path / "synthetic", Sizes(2, 1, 16, 16), seed=0)
    assert not stale.exists() and foreign.is_dir()
    assert (tmp_path / "synthetic" / "synthetic.json").is_file()
