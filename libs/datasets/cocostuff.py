"""COCO-Stuff 10k and 164k readers for the DeepLab v2 protocol (classes 0..181)."""

from .base import SegmentationDataset
from ..utils.errors import DatasetError
from .images import read_id_list, read_mat_label


class CocoStuff10k(SegmentationDataset):
    """``images/<id>.jpg``, ``annotations/<id>.mat`` (key S, 0 = unlabeled), ``imageLists/``."""

    LABEL_OFFSET = 1  # S stores class c as c + 1
    UNLABELED = (0,)
    _read_raw_label = staticmethod(read_mat_label)  # key S

    def _list_ids(self):
        return read_id_list(self.root / "imageLists" / f"{self.split}.txt")

    def _paths(self, image_id):
        return (self.root / "images" / f"{image_id}.jpg",
                self.root / "annotations" / f"{image_id}.mat")


class CocoStuff164k(SegmentationDataset):
    """``images/<split>/*.jpg`` with ``annotations/<split>/*.png`` (0..181, 255 unlabeled)."""

    def _list_ids(self):
        directory = self.root / "images" / self.split
        if not directory.is_dir():
            raise DatasetError(f"{directory}: image directory not found")
        ids = sorted(p.stem for p in directory.glob("*.jpg"))
        if not ids:
            raise DatasetError(f"{directory}: no .jpg images in the image directory")
        return ids

    def _paths(self, image_id):
        return (self.root / "images" / self.split / f"{image_id}.jpg",
                self.root / "annotations" / self.split / f"{image_id}.png")
