"""The generic folder reader (DATASET.NAME: folder) on synthetic data in that layout."""

import numpy as np
import pytest
import torch
from addict import Dict

from libs.datasets import build_dataset
from libs.utils.errors import DatasetError
from libs.datasets.images import palette_png_bytes, read_label_png
from libs.datasets.synthetic import UNLABELED

N_TRAIN, N_TEST, HEIGHT, WIDTH = 5, 2, 40, 56


@pytest.fixture
def folder_cfg(toy_cfg, tmp_path):
    """The toy config on a fresh synthetic folder dataset (generated on first use)."""
    cfg = Dict(toy_cfg.to_dict())
    cfg.DATASET.NAME = "folder"
    cfg.DATASET.ROOT = str(tmp_path / "mine")
    cfg.DATASET.SPLIT.TEST = "val"  # as in config/folder_example.yaml
    cfg.DATASET.SYNTHETIC = Dict(N_TRAIN=N_TRAIN, N_TEST=N_TEST, HEIGHT=HEIGHT, WIDTH=WIDTH)
    return cfg


def test_folder_dataset_reads_written_labels(folder_cfg, tmp_path):
    train = build_dataset(folder_cfg, "train", augment=True)
    root = tmp_path / "mine"
    assert train.ids == (root / "lists" / "train.txt").read_text().split()
    _, image, label = train[0]
    crop = folder_cfg.IMAGE.SIZE.TRAIN
    assert image.shape == (3, crop, crop) and label.dtype == torch.int64
    test = build_dataset(folder_cfg, "test", augment=False)
    assert len(test) == N_TEST
    for image_id in test.ids:
        _, label = test.read_sample(image_id)
        assert np.array_equal(label, read_label_png(root / "labels" / f"{image_id}.png"))
        assert set(np.unique(label)) <= set(range(8)) | {UNLABELED}


def test_any_class_count_png_images_and_palette_labels(folder_cfg, tmp_path):
    import cv2

    root = tmp_path / "own"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "lists").mkdir()
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{i}\tclass{i}\n" for i in range(30)))
    label = (np.arange(12 * 16).reshape(12, 16) % 30).astype(np.uint8)
    label[0, 0] = 255
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((12, 16, 3), np.uint8))
    (root / "labels" / "a.png").write_bytes(palette_png_bytes(label, np.zeros((256, 3))))
    (root / "lists" / "val.txt").write_text("a\n")
    folder_cfg.DATASET.update(ROOT=str(root), SYNTHETIC=None, LABELS=str(labels), N_CLASSES=30)
    folder_cfg.IMAGE.EVAL_ORIGINAL_SIZE = True
    _, image, read = build_dataset(folder_cfg, "val", augment=False)[0]
    assert image.shape == (3, 12, 16)
    assert np.array_equal(read.numpy(), label)
    folder_cfg.DATASET.N_CLASSES = 29
    folder_cfg.DATASET.LABELS = str(labels.with_name("l29.txt"))
    labels.with_name("l29.txt").write_text("".join(f"{i}\tc{i}\n" for i in range(29)))
    with pytest.raises(DatasetError, match="a.png: label 29 outside 0..28"):
        build_dataset(folder_cfg, "val", augment=False)[0]


def test_bad_and_missing_files(folder_cfg, tmp_path):
    dataset = build_dataset(folder_cfg, "test", augment=False)
    root = tmp_path / "mine"
    (root / "labels" / f"{dataset.ids[0]}.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"{dataset.ids[0]}.png: corrupt annotation"):
        dataset[0]
    (root / "labels" / f"{dataset.ids[1]}.png").unlink()
    with pytest.raises(DatasetError, match=f"{dataset.ids[1]}.png: annotation file not found"):
        dataset[1]
    with pytest.raises(DatasetError, match="lists/nope.txt: image list not found"):
        build_dataset(folder_cfg, "nope", augment=False)
    folder_cfg.DATASET.SKIP_BAD_SAMPLES = True
    skipping = build_dataset(folder_cfg, "train", augment=False)
    (root / "images" / f"{skipping.ids[0]}.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.warns(UserWarning, match="skipping bad sample"):
        image_id, _, _ = skipping[0]
    assert image_id == skipping.ids[1] and skipping.n_skipped == 1
