"""PASCAL VOC 2012 with the SBD augmented set (``DATASET.NAME: voc12``), DeepLab v2's protocol.

``DATASET.ROOT`` is the ``VOC2012`` folder::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png        # official labels: palette PNGs, index = class, 255 = boundary
    SegmentationClassAug/<id>.png     # SBD-augmented labels (DeepLab's): grey PNGs, same values
    ImageSets/Segmentation/<split>.txt       # one id a line (train, val, trainval)
    ImageSets/SegmentationAug/<split>.txt    # DeepLab's lists (train_aug):
                                             #   /JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png

A split name is looked up in ``ImageSets/Segmentation`` first (the official lists and
labels), then in ``ImageSets/SegmentationAug``; so ``val`` scores against the official
annotations and ``train_aug`` finds DeepLab's list. Each line of either file may be an
id (labels from ``SegmentationClass``) or an image/label pair of paths relative to
ROOT, so a DeepLab-format list works wherever it is put.

Palette PNGs are read by index, never by colour (see :mod:`.images`). The value 255
(object boundaries, "difficult" regions) becomes ``IGNORE_LABEL``.
"""

from ..utils.files import read_input
from .errors import DatasetError
from .base import SegmentationDataset
from .images import read_label_png

LIST_DIRS = ("ImageSets/Segmentation", "ImageSets/SegmentationAug")


def parse_list_line(root, line, path, number):
    """``(id, image path, label path)`` of one split-list line (an id, or a DeepLab pair)."""
    fields = line.split()
    if len(fields) == 1 and "/" not in fields[0]:
        image_id = fields[0]
        return (
            image_id,
            root / "JPEGImages" / f"{image_id}.jpg",
            root / "SegmentationClass" / f"{image_id}.png",
        )
    if len(fields) == 2:
        image, label = (root / field.lstrip("/") for field in fields)
        return image.stem, image, label
    raise DatasetError(
        f"{path}: line {number}: expected '<id>' or '/JPEGImages/<id>.jpg "
        f"/SegmentationClassAug/<id>.png', got {line!r}"
    )


class VOC12(SegmentationDataset):
    """VOC 2012 + SBD: ids or DeepLab pairs from ``ImageSets``, labels by palette index."""

    def list_path(self):
        """The split's list file: ``Segmentation/<split>.txt``, else ``SegmentationAug/``."""
        candidates = [self.root / d / f"{self.split}.txt" for d in LIST_DIRS]
        for path in candidates:
            if path.is_file():
                return path
        raise DatasetError(
            f"{candidates[0]}: split list not found (nor {candidates[1]}); "
            f"see README, 'PASCAL VOC 2012'"
        )

    def _list_ids(self):
        path = self.list_path()
        self._files = {}
        ids = []
        for number, line in enumerate(read_input(path, "split list", DatasetError).splitlines(), 1):
            if not line.strip():
                continue
            image_id, image, label = parse_list_line(self.root, line, path, number)
            if image_id not in self._files:
                ids.append(image_id)
            self._files[image_id] = (image, label)
        if not ids:
            raise DatasetError(f"{path}: split list is empty")
        return ids

    def _paths(self, image_id):
        return self._files[image_id]

    def _read_raw_label(self, path):
        return read_label_png(path)
