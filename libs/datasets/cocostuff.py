"""COCO-Stuff 10k and 164k readers for the DeepLab v2 protocol.

Both yield ``(image_id, image, label)``: ``image`` a float32 3xHxW BGR tensor with
the Caffe mean subtracted, ``label`` an int64 HxW tensor with classes 0..181 and
``ignore_label`` (255) for unlabeled pixels.

Randomness. The training transform draws its scale (one of ``scale_choices``, Caffe's
protocol, or uniform in ``scale_range``), crop and flip from
``np.random.default_rng((seed, epoch, index))``. It depends only on the config's
seed, the epoch set by ``set_epoch`` and the sample index, never on which worker
process loads the sample or in which order, so a resumed run (same seed, same
epoch, same sampler order) reproduces every crop bit for bit.

Bad files. Every image and annotation is checked when it is read. By default a
problem raises :class:`DatasetError` naming the file. With ``skip_bad_samples`` the
sample is replaced by the next readable one (index + 1, + 2, ... wrapping around),
a warning names the file the first time it is met, ``bad_samples`` maps the id to
the reason and ``n_skipped`` counts the distinct bad samples found in this process.
With ``num_workers > 0`` each worker process keeps its own record (the warnings
still reach the log); call ``check_all()`` to scan a split up front.
"""

import warnings
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import torch
from torch.utils.data import Dataset

from ..utils.files import read_input
from ..utils.sizes import size_text
from .errors import DatasetError
from .transforms import (
    augment,
    check_scales,
    mean_bgr_array,
    resize_image,
    resize_label,
    subtract_mean,
)

JPEG_SOI = b"\xff\xd8"
JPEG_SOS = b"\xff\xda"
JPEG_EOI = b"\xff\xd9"


def read_image_bgr(path, background_bgr=None):
    """Decode an image file into HxWx3 uint8 BGR, or raise DatasetError naming it.

    OpenCV silently returns a grey-filled picture for a truncated JPEG, so a JPEG
    must also carry its end-of-image marker after the last scan. An image with
    an alpha channel (PNG, WebP) is composited onto ``background_bgr`` (callers
    pass ``IMAGE.MEAN``), so transparent pixels reach the network as the mean
    colour, i.e. zero input, instead of the black that dropping the alpha
    channel would give them; without one, onto mid grey, with a warning.
    """
    path = Path(path)
    data = read_input(path, "image file", DatasetError, binary=True)
    if data.startswith(JPEG_SOI) and data.rfind(JPEG_EOI) < data.rfind(JPEG_SOS):
        raise DatasetError(f"{path}: corrupt image (truncated JPEG: no end marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: corrupt image (OpenCV cannot decode it)")
    if image.ndim == 3 and image.shape[2] in (2, 4) and background_bgr is None:
        warnings.warn(f"{path}: transparent pixels composited onto mid grey", stacklevel=2)
        background_bgr = (127.5, 127.5, 127.5)
    return to_bgr8(image, background_bgr)


def to_bgr8(image, background_bgr):
    """A decoded image (grey, grey+alpha, BGR or BGRA; 8 or 16 bit) as HxWx3 uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 2:  # grey + alpha
        image = np.dstack([image[..., 0]] * 3 + [image[..., 1]])
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        background = mean_bgr_array(background_bgr).reshape(1, 1, 3)
        blended = image[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return image[..., :3]


def read_mat_label(path, key="S"):
    """The raw label map under ``key`` of a MATLAB file (COCO-Stuff 10k annotations)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        mat = scipy.io.loadmat(str(path), variable_names=[key])
    except NotImplementedError:  # scipy's answer to HDF5-based v7.3 files
        raise DatasetError(
            f"{path}: MATLAB v7.3 files are not supported; re-save it with -v7"
        ) from None
    except Exception as e:  # scipy raises many types for damaged files
        raise DatasetError(f"{path}: corrupt annotation ({type(e).__name__}: {e})") from None
    if key not in mat:
        raise DatasetError(f"{path}: annotation has no key {key!r}")
    label = np.asarray(mat[key])
    integral = np.issubdtype(label.dtype, np.integer) or (
        np.issubdtype(label.dtype, np.floating) and np.array_equal(label, np.round(label))
    )
    if label.ndim != 2 or not integral:
        raise DatasetError(
            f"{path}: key {key!r} must be a 2-D integer label map, "
            f"got {label.dtype} of shape {label.shape}"
        )
    return label.astype(np.int64)


def read_png_label(path):
    """A single-channel PNG label map (COCO-Stuff 164k) as int64 HxW."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: annotation file not found")
    label = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"{path}: corrupt annotation (OpenCV cannot decode it)")
    if label.ndim != 2:
        raise DatasetError(
            f"{path}: expected a single-channel label PNG, got shape {label.shape}"
        )
    return label.astype(np.int64)


def check_label_values(raw, path, first, last, unlabeled, legend):
    """Raise :class:`DatasetError` for a value of the file's own label map ``raw`` that is
    neither a class (``first..last``) nor an ``unlabeled`` value.

    Judged before any remapping (the .mat's -1 shift, 255 -> IGNORE_LABEL), so a raw
    256 cannot slip through as the ignore label, and the message quotes the value
    as it is in the file. ``legend`` says what the file's values mean.
    """
    valid = (raw >= first) & (raw <= last)
    for value in unlabeled:
        valid |= raw == value
    if not valid.all():
        raise DatasetError(f"{path}: label {int(raw[~valid][0])} outside {first}..{last} "
                           f"({legend})")


class CocoStuffBase(Dataset):
    """Shared sampling, transform and skip logic; subclasses list ids and read files."""

    def __init__(
        self,
        root,
        split,
        n_classes,
        ignore_label,
        mean_bgr,
        augment,
        crop_size,
        test_size,
        scale_choices,
        scale_range,
        flip,
        eval_original_size,
        skip_bad_samples,
        seed,
        class_names=None,
    ):
        self.root = Path(root)
        self.split = split
        self.n_classes = n_classes
        self.ignore_label = ignore_label
        self.mean_bgr = tuple(float(v) for v in mean_bgr_array(mean_bgr))
        self.augment = augment
        self.crop_size = crop_size
        self.test_size = test_size
        # Exactly one is set (AUGMENTATION.SCALE_CHOICES or SCALE_RANGE); checked here so a
        # bad pair fails when the dataset is built, not in a worker process mid-epoch.
        self.scale_choices = None if scale_choices is None else tuple(scale_choices)
        self.scale_range = None if scale_range is None else tuple(scale_range)
        try:
            check_scales(self.scale_choices, self.scale_range)
        except ValueError as e:
            raise DatasetError(f"augmentation scales: {e}") from None
        self.flip = flip
        self.eval_original_size = eval_original_size
        self.skip_bad_samples = skip_bad_samples
        self.seed = seed
        self.class_names = class_names
        self.epoch = 0
        self.bad_samples = {}  # image id -> error message, filled in skip mode
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found (DATASET.ROOT)")
        self.ids = self._list_ids()

    def _list_ids(self):
        raise NotImplementedError

    def _paths(self, image_id):
        """(image path, annotation path) of an id."""
        raise NotImplementedError

    def _read_label(self, path):
        """The label map of ``path`` in 0..n-1 or the ignore label; the file's own values are
        checked first (:meth:`_check_raw`)."""
        raise NotImplementedError

    @property
    def n_skipped(self):
        """Distinct bad samples met so far in this process (skip mode)."""
        return len(self.bad_samples)

    def check_all(self):
        """Read every sample once; return ``{image_id: error}`` (raises unless skipping)."""
        for image_id in self.ids:
            if image_id not in self.bad_samples:
                try:
                    self.read_sample(image_id)
                except DatasetError as e:
                    if not self.skip_bad_samples:
                        raise
                    self.bad_samples[image_id] = str(e)
        return dict(self.bad_samples)

    def set_epoch(self, epoch):
        """Select the augmentation stream; call once per epoch before iterating."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.ids)

    def read_sample(self, image_id):
        """Untransformed ``(uint8 HxWx3 BGR image, int64 HxW label in 0..n-1 or ignore)``."""
        image_path, label_path = self._paths(image_id)
        image = read_image_bgr(image_path, self.mean_bgr)
        label = self._read_label(label_path)
        if image.shape[:2] != label.shape:
            raise DatasetError(
                f"{label_path}: label map is {size_text(*label.shape[:2])} but "
                f"{image_path.name} is {size_text(*image.shape[:2])} (width x height)"
            )
        return image, label

    def _check_raw(self, raw, path, unlabeled, offset=0):
        """:func:`check_label_values` for a file whose classes are ``offset..offset+n-1``."""
        n = self.n_classes
        shift = f", class c stored as c+{offset}" if offset else ""
        legend = f"DATASET.N_CLASSES={n}{shift}; unlabeled: {' or '.join(map(str, unlabeled))}"
        check_label_values(raw, path, offset, offset + n - 1, unlabeled, legend)

    def _transform(self, image, label, index):
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, label = augment(
                image,
                label,
                rng,
                scale_choices=self.scale_choices,
                scale_range=self.scale_range,
                crop_size=self.crop_size,
                flip=self.flip,
                ignore_label=self.ignore_label,
                mean_bgr=self.mean_bgr,
            )
        else:
            image = subtract_mean(image, self.mean_bgr)
            if not self.eval_original_size:
                size = (self.test_size, self.test_size)
                image = resize_image(image, size)
                label = resize_label(label, size)
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        label = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
        return image, label

    def __getitem__(self, index):
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} samples")
        for offset in range(len(self.ids)):
            image_id = self.ids[(index + offset) % len(self.ids)]
            if image_id in self.bad_samples:
                continue
            try:
                image, label = self.read_sample(image_id)
            except DatasetError as e:
                if not self.skip_bad_samples:
                    raise
                self.bad_samples[image_id] = str(e)
                warnings.warn(f"skipping bad sample: {e}", stacklevel=2)
                continue
            # The RNG follows the requested index, so a replacement is as reproducible.
            image, label = self._transform(image, label, index)
            return image_id, image, label
        raise DatasetError(f"{self.root}: no readable sample in split {self.split!r}")

    def __repr__(self):
        mode = "train" if self.augment else "eval"
        return f"{type(self).__name__}({self.root}, split={self.split!r}, n={len(self)}, {mode})"


class CocoStuff10k(CocoStuffBase):
    """``images/<id>.jpg``, ``annotations/<id>.mat`` (key S, 0 = unlabeled), ``imageLists/``."""

    def _list_ids(self):
        path = self.root / "imageLists" / f"{self.split}.txt"
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DatasetError(f"{path}: image list not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: cannot read image list ({e})") from None
        ids = [line.strip() for line in text.splitlines() if line.strip()]
        if not ids:
            raise DatasetError(f"{path}: image list is empty")
        return ids

    def _paths(self, image_id):
        return (
            self.root / "images" / f"{image_id}.jpg",
            self.root / "annotations" / f"{image_id}.mat",
        )

    def _read_label(self, path):
        raw = read_mat_label(path, "S")
        self._check_raw(raw, path, unlabeled=(0,), offset=1)
        label = raw - 1  # 1..182 -> 0..181
        label[raw == 0] = self.ignore_label  # 0 = unlabeled
        return label


class CocoStuff164k(CocoStuffBase):
    """``images/<split>/*.jpg`` with ``annotations/<split>/*.png`` (0..181, 255 unlabeled)."""

    PNG_UNLABELED = 255

    def _list_ids(self):
        directory = self.root / "images" / self.split
        if not directory.is_dir():
            raise DatasetError(f"{directory}: image directory not found")
        ids = sorted(p.stem for p in directory.glob("*.jpg"))
        if not ids:
            raise DatasetError(f"{directory}: no .jpg images in the image directory")
        return ids

    def _paths(self, image_id):
        return (
            self.root / "images" / self.split / f"{image_id}.jpg",
            self.root / "annotations" / self.split / f"{image_id}.png",
        )

    def _read_label(self, path):
        label = read_png_label(path)
        self._check_raw(label, path, unlabeled=(self.PNG_UNLABELED,))
        label[label == self.PNG_UNLABELED] = self.ignore_label
        return label
