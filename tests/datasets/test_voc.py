"""PASCAL VOC 2012 + SBD reader on synthetic data in the VOC layout, end to end.

The palette PNGs are written by a hand-made zlib encoder (libs.datasets.images),
so reading them back through OpenCV checks the decoder against independent bytes.
"""

import json

import numpy as np
import pytest
import torch
from addict import Dict

from libs.datasets import build_dataset
from libs.utils.errors import DatasetError
from libs.datasets.images import grey_png_bytes, palette_png_bytes, read_label_png, voc_colour_map
from libs.datasets.synthetic import UNLABELED, Sizes, generate_synthetic

N_TRAIN, N_TEST, HEIGHT, WIDTH = 6, 3, 48, 64


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    """A read-only synthetic VOC2012 folder (6 train_aug, 3 val images of 48x64)."""
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    return generate_synthetic(root, Sizes(N_TRAIN, N_TEST, HEIGHT, WIDTH), seed=3, layout="voc12")


@pytest.fixture
def voc_cfg(toy_cfg, voc_root):
    """The toy config reading the synthetic VOC folder (8 classes, train_aug / val)."""
    cfg = Dict(toy_cfg.to_dict())
    cfg.DATASET.NAME = "voc12"
    cfg.DATASET.ROOT = str(voc_root)
    cfg.DATASET.SYNTHETIC = Dict(N_TRAIN=N_TRAIN, N_TEST=N_TEST, HEIGHT=HEIGHT, WIDTH=WIDTH)
    cfg.DATASET.SPLIT.TRAIN = "train_aug"
    cfg.DATASET.SPLIT.TEST = "val"
    return cfg


def test_palette_png_is_read_by_index_not_colour(tmp_path):
    indices = np.array([[0, 1, 2, 255], [20, 15, 7, 0]], np.uint8)
    palette = voc_colour_map()
    path = tmp_path / "p.png"
    path.write_bytes(palette_png_bytes(indices, palette))
    assert np.array_equal(read_label_png(path), indices)
    # a shuffled palette changes every colour but no index
    path.write_bytes(palette_png_bytes(indices, palette[::-1]))
    assert np.array_equal(read_label_png(path), indices)
    grey = tmp_path / "g.png"
    grey.write_bytes(grey_png_bytes(indices))
    assert np.array_equal(read_label_png(grey), indices)


def test_palette_png_matches_pillow(voc_root):
    image_module = pytest.importorskip("PIL.Image")
    for path in sorted((voc_root / "SegmentationClass").glob("*.png")):
        with image_module.open(path) as picture:
            assert picture.mode == "P"
            assert np.array_equal(read_label_png(path), np.array(picture))


def test_colour_png_label_is_rejected(tmp_path):
    import cv2

    path = tmp_path / "rgb.png"
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="rgb.png.*single-channel"):
        read_label_png(path)


def test_both_list_formats_and_labels_equal_written_indices(voc_cfg, voc_root):
    val = build_dataset(voc_cfg, "test", augment=False)  # ids, SegmentationClass
    aug = build_dataset(voc_cfg, "train", augment=False)  # pairs, SegmentationClassAug
    ids = (voc_root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert val.ids == ids and len(aug) == N_TRAIN
    pairs = (voc_root / "ImageSets/SegmentationAug/train_aug.txt").read_text().splitlines()
    assert aug.ids == [line.split()[0].split("/")[-1][:-4] for line in pairs]
    image_path, label_path = aug._paths(aug.ids[0])
    assert label_path.parent.name == "SegmentationClassAug" and image_path.is_file()
    assert val._paths(ids[0])[1].parent.name == "SegmentationClass"
    for dataset in (val, aug):
        for image_id in dataset.ids:
            _, label = dataset.read_sample(image_id)
            _, written = dataset._paths(image_id)
            with open(written, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            assert label.shape == (HEIGHT, WIDTH)
            assert set(np.unique(label)) <= set(range(8)) | {UNLABELED}
            assert (label == UNLABELED).any() and (label < 8).any()
    # the palette (val) and grey (aug) copies of a train image hold the same indices
    trainval = build_dataset(voc_cfg, "train", augment=False)
    image_id = trainval.ids[0]
    palette_label = read_label_png(voc_root / "SegmentationClass" / f"{image_id}.png")
    assert np.array_equal(trainval.read_sample(image_id)[1], palette_label)


def test_ignore_value_is_mapped_to_ignore_label(voc_cfg):
    voc_cfg.DATASET.IGNORE_LABEL = 254
    dataset = build_dataset(voc_cfg, "test", augment=False)
    _, label = dataset.read_sample(dataset.ids[0])
    assert (label == 254).any() and not (label == 255).any()


def test_training_and_eval_items(voc_cfg):
    train = build_dataset(voc_cfg, "train", augment=True)
    image_id, image, label = train[0]
    crop = voc_cfg.IMAGE.SIZE.TRAIN
    assert image.shape == (3, crop, crop) and label.shape == (crop, crop)
    assert image.dtype == torch.float32 and label.dtype == torch.int64
    voc_cfg.IMAGE.EVAL_ORIGINAL_SIZE = True
    _, image, label = build_dataset(voc_cfg, "test", augment=False)[1]
    assert image.shape == (3, HEIGHT, WIDTH) and label.shape == (HEIGHT, WIDTH)


def test_missing_list_and_bad_files(voc_cfg, tmp_path):
    with pytest.raises(DatasetError, match="nosuch.txt: split list not found"):
        build_dataset(voc_cfg, "nosuch", augment=False)
    root = tmp_path / "VOC2012"
    generate_synthetic(root, Sizes(3, 2, 32, 40), seed=1, layout="voc12")
    cfg = Dict(voc_cfg.to_dict())
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.SYNTHETIC = Dict(N_TRAIN=3, N_TEST=2, HEIGHT=32, WIDTH=40)
    val = build_dataset(cfg, "test", augment=False)
    corrupt = root / "SegmentationClass" / f"{val.ids[0]}.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    (root / "JPEGImages" / f"{val.ids[1]}.jpg").unlink()
    with pytest.raises(DatasetError, match=f"{val.ids[0]}.png: corrupt annotation"):
        val[0]
    with pytest.raises(DatasetError, match=f"{val.ids[1]}.jpg: image file not found"):
        val[1]
    cfg.DATASET.SKIP_BAD_SAMPLES = True
    skipping = build_dataset(cfg, "test", augment=False)
    with pytest.warns(UserWarning, match="skipping bad sample"):
        with pytest.raises(DatasetError, match="no readable sample"):
            skipping[0]
    assert skipping.n_skipped == 2
    bad_list = root / "ImageSets" / "Segmentation" / "bad.txt"
    bad_list.write_text("a b c\n")
    with pytest.raises(DatasetError, match="bad.txt: line 1"):
        build_dataset(cfg, "bad", augment=False)


def test_synthetic_layout_mismatch_is_an_error(voc_cfg, synthetic_root):
    voc_cfg.DATASET.ROOT = str(synthetic_root)  # a COCO-Stuff-layout synthetic dataset
    voc_cfg.DATASET.SYNTHETIC = Dict(N_TRAIN=12, N_TEST=4, HEIGHT=64, WIDTH=80)
    with pytest.raises(DatasetError, match="cocostuff10k layout.*voc12 layout"):
        build_dataset(voc_cfg, "train", augment=False)


def test_synthetic_generated_on_first_use(voc_cfg, tmp_path):
    voc_cfg.DATASET.ROOT = str(tmp_path / "fresh" / "VOC2012")
    dataset = build_dataset(voc_cfg, "train", augment=True)
    assert len(dataset) == N_TRAIN
    marker = json.loads((tmp_path / "fresh" / "VOC2012" / "synthetic.json").read_text())
    assert marker["layout"] == "voc12"


def test_toy_training_and_evaluation(voc_cfg, one_torch_thread):
    from libs.inference.evaluation import EvalOptions, evaluate
    from libs.training import train

    voc_cfg.IMAGE.EVAL_ORIGINAL_SIZE = True
    model = train(voc_cfg, torch.device("cpu"), progress=False)
    matrix, n_images = evaluate(voc_cfg, model.eval(), torch.device("cpu"),
                                EvalOptions(progress=False))
    assert n_images == N_TEST
    matrix = matrix.hist
    assert matrix.shape == (8, 8)
    # every labelled (non-ignore) pixel of the val images is counted exactly once
    dataset = build_dataset(voc_cfg, "test", augment=False)
    labelled = sum(int((dataset.read_sample(i)[1] != UNLABELED).sum()) for i in dataset.ids)
    assert matrix.sum() == labelled
