"""A dataset of your own: ``images/``, ``labels/`` and ``lists/<split>.txt`` under ROOT.

Layout (``DATASET.NAME: folder``)::

    ROOT/images/<id>.jpg          # or .jpeg / .png / .bmp, any size
    ROOT/labels/<id>.png          # one channel: class index per pixel, IGNORE_LABEL = unlabeled
    ROOT/lists/<split>.txt        # one id a line (an id may contain sub-folders: "a/b")

Any number of classes: the names come from ``DATASET.LABELS``, the count from
``DATASET.N_CLASSES``; a label outside ``0..N_CLASSES-1`` that is not the ignore
value is a bad file. Label PNGs may be greyscale (8 or 16 bit) or palette PNGs,
read by index (:func:`~.images.read_label_png`).
"""

from .base import SegmentationDataset
from .images import read_id_list, read_label_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class FolderDataset(SegmentationDataset):
    """``images/<id>.*`` + ``labels/<id>.png`` listed by ``lists/<split>.txt`` (see module doc)."""

    def unlabeled(self):
        return (self.ignore_label,)

    def _list_ids(self):
        return read_id_list(self.root / "lists" / f"{self.split}.txt")

    def _image_path(self, image_id):
        """The first existing ``images/<id><suffix>``; the ``.jpg`` path when none exists,
        so the error names the file a user most likely meant."""
        for suffix in IMAGE_SUFFIXES:
            path = self.root / "images" / f"{image_id}{suffix}"
            if path.is_file():
                return path
        return self.root / "images" / f"{image_id}{IMAGE_SUFFIXES[0]}"

    def _paths(self, image_id):
        return self._image_path(image_id), self.root / "labels" / f"{image_id}.png"

    def _read_raw_label(self, path):
        return read_label_png(path)
