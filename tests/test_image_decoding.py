"""Images with alpha, grey and 16-bit images become 3-channel uint8 BGR the network can take."""

import cv2
import numpy as np
import pytest

from libs.datasets.images import read_image_bgr

MEAN = (104.008, 116.669, 122.675)


def write(path, image):
    assert cv2.imwrite(str(path), image)
    return path


def test_transparent_pixels_become_the_mean_colour(tmp_path):
    bgra = np.zeros((4, 6, 4), np.uint8)
    bgra[..., :3] = (10, 200, 30)
    bgra[:, :3, 3] = 255  # left half opaque, right half transparent
    bgra[0, 3, 3] = 128  # one half-transparent pixel
    image = read_image_bgr(write(tmp_path / "a.png", bgra), MEAN)
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    assert (image[:, :3] == (10, 200, 30)).all()
    assert (image[1:, 3:] == np.rint(MEAN)).all()  # not black
    expected = np.rint(np.array([10, 200, 30]) * 128 / 255 + np.array(MEAN) * 127 / 255)
    assert (image[0, 3] == expected).all()


def test_alpha_without_a_background_warns_and_uses_grey(tmp_path):
    bgra = np.zeros((2, 2, 4), np.uint8)
    path = write(tmp_path / "b.png", bgra)
    with pytest.warns(UserWarning, match="b.png: transparent pixels composited onto mid grey"):
        image = read_image_bgr(path)
    assert (image == 128).all()


def test_grey_and_16_bit_images(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    image = read_image_bgr(write(tmp_path / "g.png", grey), MEAN)
    assert image.shape == (3, 4, 3) and (image == grey[..., None]).all()
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    bgr16 = np.dstack([deep] * 3)
    image = read_image_bgr(write(tmp_path / "d.png", bgr16), MEAN)
    assert image.dtype == np.uint8 and (image[..., 0] == deep >> 8).all()
    grey_alpha = cv2.imread(str(write(tmp_path / "ga.png", np.dstack(
        [np.full((2, 2, 3), 50, np.uint8), np.full((2, 2), 255, np.uint8)]))),
        cv2.IMREAD_UNCHANGED)
    assert grey_alpha.shape[2] == 4
    assert (read_image_bgr(tmp_path / "ga.png", MEAN) == 50).all()


def test_the_config_mean_mapping_is_accepted(tmp_path):
    bgra = np.zeros((2, 2, 4), np.uint8)
    image = read_image_bgr(write(tmp_path / "c.png", bgra), {"B": 10.0, "G": 20.0, "R": 30.0})
    assert (image == (10, 20, 30)).all()
