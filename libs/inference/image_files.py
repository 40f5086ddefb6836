"""Which files predict.py segments and where their labels go, all checked before the first image.

Files, folders (their images, not recursive) and globs, in the order given; anything not taken
is said, never skipped silently: a folder's other files are listed, a repeated file, a missing
one, a glob matching nothing, two inputs whose outputs would share a name, and an output that
is an input or another run's file are each one line before any work.
"""

import glob
from pathlib import Path

from ..utils.errors import DatasetError, OutputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def collect_images(inputs, log=print):
    """The image files named by ``inputs`` (paths, folders, globs), each once, in order."""
    found, seen = [], {}
    for given in map(str, inputs):
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
            if others:
                log(f"{given}: not images, left out: {', '.join(others)}")
            paths = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            if not paths:
                raise DatasetError(f"{given}: a folder with no image files")
        elif path.exists():
            paths = [path]
        elif glob.has_magic(given):
            paths = [Path(p) for p in sorted(glob.glob(given)) if Path(p).is_file()]
            if not paths:
                raise DatasetError(f"{given}: no file matches")
        else:
            raise DatasetError(f"{given}: not found")
        for p in paths:
            key = p.resolve()
            if key in seen:
                raise DatasetError(f"{p}: given twice (also as {seen[key]})")
            seen[key] = given
            found.append(p)
    return found


def output_paths(images, output_dir, overwrite=False, overlay=False):
    """``[(label PNG, overlay PNG or None)]`` in ``output_dir``, named after each image's stem."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir}: --output-dir is a file")
    inputs = {p.resolve(): p for p in images}
    names, outputs = {}, []
    for image in images:
        pair = (output_dir / f"{image.stem}.png",
                output_dir / f"{image.stem}_overlay.png" if overlay else None)
        for path in filter(None, pair):
            if path.name in names:
                raise OutputError(f"{image} and {names[path.name]} would both write "
                                  f"{path}: rename one, or segment them in two runs")
            names[path.name] = image
            if path.resolve() in inputs:
                raise OutputError(f"{path}: would overwrite the input image "
                                  f"{inputs[path.resolve()]}; choose another --output-dir")
            if path.exists() and not overwrite:
                raise OutputError(f"{path} exists (an earlier run's?); "
                                  "add --overwrite or choose another --output-dir")
        outputs.append(pair)
    return outputs
