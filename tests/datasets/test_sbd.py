"""SBD + VOC 2012 -> DeepLab's train_aug (libs/datasets/sbd.py, python -m libs.cli.sbd).

A tiny fake SBD (``cls/<id>.mat`` GTcls structs as in the real files, train/val lists)
sits beside a tiny synthetic VOC2012 folder; the SBD ids overlap VOC's train and val
lists the way the real ones do, so every rule of the set difference is exercised.
"""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from addict import Dict
from click.testing import CliRunner

from libs.cli import sbd as sbd_cli
from libs.datasets import build_dataset
from libs.utils.errors import DatasetError, OutputError
from libs.datasets.images import read_label_png
from libs.datasets.sbd import convert_sbd, read_sbd_label
from libs.datasets.synthetic import Sizes, generate_synthetic

REPO = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH = 24, 32
SBD_ONLY_TRAIN = ["2009_000001", "2009_000007", "2010_000003"]
SBD_ONLY_VAL = ["2011_000005"]


def sbd_label(seed):
    """A random SBD-like map: classes 0..20, no 255 (SBD has no boundary band)."""
    return np.random.default_rng(seed).integers(0, 21, (HEIGHT, WIDTH)).astype(np.uint8)


def save_gtcls(path, segmentation):
    """A ``cls/<id>.mat`` as SBD stores it: struct GTcls with its three fields."""
    boundaries = np.empty((20, 1), object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix((segmentation == k + 1).astype(float))
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": segmentation, "Boundaries": boundaries,
                                      "CategoriesPresent": present}})


@pytest.fixture
def sets(tmp_path):
    """``(sbd_root, voc_root, expected)``; expected holds train_aug and every id's label."""
    voc = generate_synthetic(tmp_path / "VOCdevkit" / "VOC2012", Sizes(4, 3, HEIGHT, WIDTH), seed=5,
                             layout="voc12")
    (voc / "ImageSets/SegmentationAug/train_aug.txt").unlink()  # the converter's job
    lists = voc / "ImageSets" / "Segmentation"
    voc_train = (lists / "train.txt").read_text().split()
    voc_val = (lists / "val.txt").read_text().split()
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    # SBD also annotates one VOC train id and two VOC val ids (one in each SBD list)
    sbd_train = SBD_ONLY_TRAIN + [voc_train[0], voc_val[0]]
    sbd_val = SBD_ONLY_VAL + [voc_val[1]]
    labels = {}
    for seed, image_id in enumerate(sbd_train + sbd_val):
        labels[image_id] = sbd_label(seed)
        save_gtcls(sbd / "cls" / f"{image_id}.mat", labels[image_id])
    for image_id in SBD_ONLY_TRAIN + SBD_ONLY_VAL:  # VOC 2012 has every SBD image
        cv2.imwrite(str(voc / "JPEGImages" / f"{image_id}.jpg"),
                    np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in sbd_train))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in sbd_val))
    for image_id in voc_train + voc_val:  # the official label wins where both exist
        labels[image_id] = read_label_png(voc / "SegmentationClass" / f"{image_id}.png")
    train_aug = sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))
    return sbd, voc, Dict(train_aug=train_aug, labels=labels, voc_ids=voc_train + voc_val)


def expected_lines(train_aug):
    return "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in train_aug)


def test_list_and_labels_follow_deeplab(sets):
    sbd, voc, expected = sets
    assert len(expected.train_aug) == 3 + 1 + 4  # SBD-only ids and VOC train
    result = convert_sbd(sbd, voc)
    list_path = voc / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    assert list_path.read_text() == expected_lines(expected.train_aug)
    pngs = sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png"))
    assert pngs == sorted(expected.labels)  # train_aug and every VOC trainval id
    for image_id, label in expected.labels.items():
        path = voc / "SegmentationClassAug" / f"{image_id}.png"
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint8 and raw.shape == (HEIGHT, WIDTH)  # one 8-bit channel
        assert np.array_equal(raw, label), image_id
    overlap = expected.voc_ids[0]  # in SBD train and VOC train: VOC's label, 255 band kept
    assert (read_label_png(voc / "SegmentationClassAug" / f"{overlap}.png") == 255).any()
    assert result.n_train_aug == 8 and result.n_labels == 3 + 1 + 7
    assert result.n_from_voc == 7 and result.list_written
    assert result.n_written == 4 and result.n_unchanged == 7  # the generator's equal PNGs


def test_voc_reader_reads_the_converted_set(sets, toy_cfg):
    sbd, voc, expected = sets
    convert_sbd(sbd, voc)
    cfg = Dict(toy_cfg.to_dict())
    cfg.DATASET.NAME = "voc12"
    cfg.DATASET.ROOT = str(voc)
    cfg.DATASET.SYNTHETIC = None
    cfg.DATASET.LABELS = str(REPO / "data" / "voc12-labels.txt")
    cfg.DATASET.N_CLASSES = 21
    cfg.DATASET.IGNORE_LABEL = 255
    cfg.DATASET.SPLIT.TRAIN = "train_aug"
    dataset = build_dataset(cfg, "train", augment=False)
    assert dataset.ids == expected.train_aug
    for image_id in dataset.ids:
        image, label = dataset.read_sample(image_id)
        assert image.shape == (HEIGHT, WIDTH, 3)
        assert np.array_equal(label, expected.labels[image_id])


def test_rerun_changes_nothing(sets):
    sbd, voc, _ = sets
    convert_sbd(sbd, voc)
    files = sorted((voc / "SegmentationClassAug").glob("*.png"))
    files.append(voc / "ImageSets" / "SegmentationAug" / "train_aug.txt")
    stamps = [p.stat().st_mtime_ns for p in files]
    again = convert_sbd(sbd, voc)
    assert again.n_written == 0 and again.n_unchanged == again.n_labels
    assert not again.list_written
    assert [p.stat().st_mtime_ns for p in files] == stamps


def test_different_list_or_png_is_refused_before_writing(sets):
    sbd, voc, expected = sets
    list_path = voc / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    list_path.write_text(expected_lines(expected.train_aug[:-1]))
    with pytest.raises(OutputError, match=f"{list_path}: exists with 7 different lines"):
        convert_sbd(sbd, voc)
    assert not (voc / "SegmentationClassAug" / f"{SBD_ONLY_TRAIN[0]}.png").exists()
    list_path.unlink()
    png = voc / "SegmentationClassAug" / f"{SBD_ONLY_VAL[0]}.png"
    png.write_bytes(cv2.imencode(".png", np.zeros((HEIGHT, WIDTH), np.uint8))[1].tobytes())
    with pytest.raises(OutputError, match=f"{png}: exists with different labels"):
        convert_sbd(sbd, voc)
    result = convert_sbd(sbd, voc, overwrite=True)
    assert result.list_written
    assert np.array_equal(read_label_png(png), expected.labels[SBD_ONLY_VAL[0]])


def write_bad_mat(path, kind):
    if kind == "corrupt":
        path.write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" * 3)
    elif kind == "no GTcls":
        scipy.io.savemat(path, {"GTinst": {"Segmentation": sbd_label(0)}})
    elif kind == "out of range":
        label = sbd_label(0)
        label[3, 4] = 30
        save_gtcls(path, label)
    else:
        path.unlink()


@pytest.mark.parametrize("kind, message", [
    ("corrupt", "corrupt SBD annotation"),
    ("no GTcls", "no GTcls struct"),
    ("out of range", "label 30 outside 0..20"),
    ("missing", "SBD annotation not found"),
])
def test_bad_mat_is_one_line_naming_it(sets, kind, message):
    sbd, voc, _ = sets
    path = sbd / "cls" / f"{SBD_ONLY_TRAIN[1]}.mat"
    write_bad_mat(path, kind)
    with pytest.raises(DatasetError) as error:
        convert_sbd(sbd, voc)
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)
    result = CliRunner().invoke(sbd_cli.main, ["--sbd", str(sbd), "--voc", str(voc)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {path}: {message}")


def test_sbd_reader_returns_the_segmentation(tmp_path):
    label = sbd_label(3)
    save_gtcls(tmp_path / "a.mat", label)
    read = read_sbd_label(tmp_path / "a.mat")
    assert read.dtype == np.uint8 and np.array_equal(read, label)


def test_missing_jpeg_stops_before_writing(sets):
    sbd, voc, _ = sets
    image = voc / "JPEGImages" / f"{SBD_ONLY_VAL[0]}.jpg"
    image.unlink()
    with pytest.raises(DatasetError, match=f"{image}: image file not found"):
        convert_sbd(sbd, voc)
    assert not (voc / "ImageSets" / "SegmentationAug" / "train_aug.txt").exists()
    assert not (voc / "SegmentationClassAug" / f"{SBD_ONLY_TRAIN[0]}.png").exists()


def test_command_output_and_exit_code(sets):
    sbd, voc, expected = sets
    args = ["--sbd", str(sbd.parent), "--voc", str(voc.parent), "--no-progress"]  # parents
    result = CliRunner().invoke(sbd_cli.main, args)
    assert result.exit_code == 0, result.output
    label_dir = voc / "SegmentationClassAug"
    assert f"wrote 4 label PNGs to {label_dir} (7 already there;" in result.output
    assert "11 in all, 7 from VOC's SegmentationClass, 4 from SBD" in result.output
    list_path = voc / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    assert f"train_aug: 8 images in {list_path} (written)" in result.output
    again = CliRunner().invoke(sbd_cli.main, args)
    assert again.exit_code == 0 and "wrote 0 label PNGs" in again.output
    assert "(unchanged)" in again.output
    assert list_path.read_text() == expected_lines(expected.train_aug)


def test_help():
    result = CliRunner().invoke(sbd_cli.main, ["-h"])
    assert result.exit_code == 0 and "--sbd" in result.output and "--voc" in result.output
    module = subprocess.run([sys.executable, "-m", "libs.cli.sbd", "--help"], cwd=REPO,
                            capture_output=True, text=True)
    assert module.returncode == 0 and "train_aug" in module.stdout
