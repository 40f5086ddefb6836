"""PASCAL VOC 2012 with the SBD augmented set (``DATASET.NAME: voc12``), DeepLab v2's protocol.

``DATASET.ROOT`` is the ``VOC2012`` folder (docs/data.md). A split is looked up in
``ImageSets/Segmentation`` (official lists and labels) before ``ImageSets/SegmentationAug``, and
a line may be an id or an image/label pair relative to ROOT, so ``val`` scores against the
official labels and a DeepLab-format list works wherever it is put. 255 becomes the ignore label.
"""

from ..utils.atomic import read_input
from .base import SegmentationDataset
from ..utils.errors import DatasetError


class VOC12(SegmentationDataset):
    """VOC 2012 + SBD: ids or DeepLab pairs from ``ImageSets``, labels by palette index."""

    def _list_ids(self):
        """The ids in ``Segmentation/<split>.txt``, else in ``SegmentationAug/<split>.txt``."""
        candidates = [self.root / "ImageSets" / folder / f"{self.split}.txt"
                      for folder in ("Segmentation", "SegmentationAug")]
        path = next((path for path in candidates if path.is_file()), None)
        if path is None:
            raise DatasetError(f"{candidates[0]}: split list not found (nor {candidates[1]}); "
                               "see README, 'PASCAL VOC 2012'")
        self._files, ids = {}, []  # id -> (image, label); the ids in order, once each
        for number, line in enumerate(read_input(path, "split list", DatasetError).splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 1 and "/" not in fields[0]:  # an id
                image_id = fields[0]
                image = self.root / "JPEGImages" / f"{image_id}.jpg"
                label = self.root / "SegmentationClass" / f"{image_id}.png"
            elif len(fields) == 2:  # a DeepLab pair
                image, label = (self.root / field.lstrip("/") for field in fields)
                image_id = image.stem
            else:
                raise DatasetError(f"{path}: line {number}: expected '<id>' or '/JPEGImages/<id>"
                                   f".jpg /SegmentationClassAug/<id>.png', got {line!r}")
            if image_id not in self._files:
                ids.append(image_id)
            self._files[image_id] = (image, label)
        if not ids:
            raise DatasetError(f"{path}: split list is empty")
        return ids

    def _paths(self, image_id):
        return self._files[image_id]
