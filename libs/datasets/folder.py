"""A dataset of your own (``DATASET.NAME: folder``; layout in docs/data.md)::

    ROOT/images/<id>.jpg          # or .jpeg / .png / .bmp, any size
    ROOT/labels/<id>.png          # one channel (grey or palette): class index or IGNORE_LABEL
    ROOT/lists/<split>.txt        # one id a line (an id may contain sub-folders: "a/b")
"""

from .base import SegmentationDataset
from .images import read_id_list

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class FolderDataset(SegmentationDataset):
    """``images/<id>.*`` + ``labels/<id>.png`` listed by ``lists/<split>.txt`` (see module doc)."""

    UNLABELED = None  # the ignore label itself

    def _list_ids(self):
        return read_id_list(self.root / "lists" / f"{self.split}.txt")

    def _paths(self, image_id):
        """The first existing ``images/<id><suffix>``, else the ``.jpg`` path (so the error names
        the file a user most likely meant), and ``labels/<id>.png``."""
        images = [self.root / "images" / f"{image_id}{suffix}" for suffix in IMAGE_SUFFIXES]
        image = next((path for path in images if path.is_file()), images[0])
        return image, self.root / "labels" / f"{image_id}.png"
