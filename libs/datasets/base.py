"""What every dataset shares: the split's ids, reading a pair, the label table, the transform.

A dataset yields ``(image_id, image, label)``: a float32 3xHxW BGR tensor with the mean
subtracted and an int64 HxW tensor of classes 0..n-1 and ``ignore_label``. A subclass lists its
ids in order (``_list_ids``), names an id's image and label files (``_paths``), may read labels
other than PNGs (``_read_raw_label``) and says what the raw values mean (``LABEL_OFFSET``,
``UNLABELED``). The augmentation draws from ``(seed, epoch, index)`` alone, never from the
worker process or the order, so a resumed run (same seed, epoch and sampler order) reproduces
every crop bit for bit.

A bad file raises :class:`DatasetError` naming it; with ``skip_bad_samples`` the next readable
sample replaces it (each DataLoader worker keeps its own record; docs/data.md, "Bad files").
"""

import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..utils.sizes import size_text
from ..utils.errors import DatasetError
from .images import read_image_bgr, read_label_png


class SegmentationDataset(Dataset):
    """Shared sampling, label mapping, transform and skip logic (module doc)."""

    LABEL_OFFSET = 0  # the file stores class c as c + LABEL_OFFSET
    UNLABELED = (255,)  # raw values that become the ignore label (None: the ignore label's own)
    _read_raw_label = staticmethod(read_label_png)  # path -> the file's own values, int64 HxW

    def __init__(self, root, split, n_classes, transform, skip_bad_samples=False,
                 class_names=None):
        self.root, self.split, self.n_classes = Path(root), split, n_classes
        self.transform, self.ignore_label = transform, transform.ignore_label  # a Transform
        self.skip_bad_samples, self.class_names = skip_bad_samples, class_names
        self.epoch, self.bad_samples = 0, {}  # bad_samples: image id -> error, in skip mode
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found (DATASET.ROOT)")
        self.ids = self._list_ids()
        self.unlabeled = (self.ignore_label,) if self.UNLABELED is None else self.UNLABELED
        # Raw value -> train id (a class or the ignore label); -1 marks an invalid value.
        first, unlabeled = self.LABEL_OFFSET, [v for v in self.unlabeled if v >= 0]
        self._table = np.full(max([first + n_classes, *(v + 1 for v in unlabeled)]), -1, np.int64)
        self._table[first : first + n_classes] = np.arange(n_classes)
        self._table[unlabeled] = self.ignore_label

    @property
    def n_skipped(self):
        """Distinct bad samples met so far in this process (skip mode)."""
        return len(self.bad_samples)

    def _read_or_skip(self, image_id):
        """``read_sample``, or None for a bad sample in skip mode (recorded in ``bad_samples``)."""
        try:
            return self.read_sample(image_id)
        except DatasetError as e:
            if not self.skip_bad_samples:
                raise
            self.bad_samples[image_id] = str(e)
            return None

    def check_all(self):
        """Read every sample once; return ``{image_id: error}`` (raises unless skipping)."""
        for image_id in self.ids:
            if image_id not in self.bad_samples:
                self._read_or_skip(image_id)
        return dict(self.bad_samples)

    def set_epoch(self, epoch):
        """Select the augmentation stream; call once per epoch before iterating."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.ids)

    def read_sample(self, image_id):
        """Untransformed ``(uint8 HxWx3 BGR image, int64 HxW label in 0..n-1 or ignore)``."""
        image_path, label_path = self._paths(image_id)
        image = read_image_bgr(image_path, self.transform.mean_bgr)
        raw = self._read_raw_label(label_path)
        # Judged on the file's own values, so that a raw 256 cannot slip through as the ignore.
        label = np.take(self._table, raw, mode="clip")
        bad = (raw < 0) | (raw >= len(self._table)) | (label < 0)
        if bad.any():
            first, n = self.LABEL_OFFSET, self.n_classes
            shift = f", class c stored as c+{first}" if first else ""
            unlabeled = " or ".join(map(str, self.unlabeled))
            raise DatasetError(f"{label_path}: label {int(raw[bad][0])} outside "
                               f"{first}..{first + n - 1} (DATASET.N_CLASSES={n}{shift}; "
                               f"unlabeled: {unlabeled})")
        if image.shape[:2] != label.shape:
            raise DatasetError(f"{label_path}: label map is {size_text(*label.shape)} but "
                               f"{image_path.name} is {size_text(*image.shape[:2])} "
                               "(width x height)")
        return image, label

    def __getitem__(self, index):
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} samples")
        for offset in range(len(self.ids)):
            image_id = self.ids[(index + offset) % len(self.ids)]
            if image_id in self.bad_samples:
                continue
            sample = self._read_or_skip(image_id)
            if sample is None:
                warnings.warn(f"skipping bad sample: {self.bad_samples[image_id]}", stacklevel=2)
                continue
            # The RNG follows the requested index, so a replacement is as reproducible.
            image, label = self.transform(*sample, self.epoch, index)
            return image_id, image, label
        raise DatasetError(f"{self.root}: no readable sample in split {self.split!r}")

