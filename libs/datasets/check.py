"""Scan a dataset once and say what is in it and what is broken (``python -m libs.cli.check``).

A bad file found mid-way costs a long run; a class that never occurs, or labels mostly ignored,
silently cost the scores. Every sample is read by the dataset's own ``read_sample`` (training's
checks), past bad files, which also go into its ``bad_samples`` as in its skip mode.
"""

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from . import build_dataset, load_checked_class_names, resolve_split
from ..utils.errors import DatasetError

DEFAULT_SPLITS = ("train", "test")


@dataclass
class SplitReport:
    """What one scan of one split found; ``error`` is set when the split could not be listed."""

    name: str
    split: str
    n_classes: int
    n_samples: int = 0
    heights: list = field(default_factory=list)
    widths: list = field(default_factory=list)
    class_pixels: np.ndarray = None
    ignored_pixels: int = 0
    bad: dict = field(default_factory=dict)  # image id -> reason
    error: str = None

    def __post_init__(self):
        if self.class_pixels is None:
            self.class_pixels = np.zeros(self.n_classes, np.int64)

    @property
    def total_pixels(self):
        return int(self.class_pixels.sum()) + self.ignored_pixels

    @property
    def never_present(self):
        """Class ids without a single pixel in the readable samples."""
        return [int(i) for i in np.flatnonzero(self.class_pixels == 0)]

    @property
    def ok(self):
        return self.error is None and not self.bad


def scan_dataset(dataset, name=None, progress=True):
    """The :class:`SplitReport` of reading every sample of ``dataset`` once (duplicate ids once)."""
    ids = list(dict.fromkeys(dataset.ids))
    report = SplitReport(name or dataset.split, dataset.split, dataset.n_classes, len(ids))
    for image_id in tqdm(ids, desc=f"check {report.name}", unit="img", dynamic_ncols=True,
                         disable=not progress, leave=False):
        try:
            image, label = dataset.read_sample(image_id)
        except DatasetError as e:
            dataset.bad_samples[image_id] = report.bad[image_id] = str(e)
            continue
        report.heights.append(image.shape[0])
        report.widths.append(image.shape[1])
        ignored = label == dataset.ignore_label  # read_sample left only classes and ignore
        report.ignored_pixels += int(ignored.sum())
        report.class_pixels += np.bincount(label[~ignored].ravel(), minlength=report.n_classes)
    return report


def check_config(cfg, splits=DEFAULT_SPLITS, progress=True):
    """``(class names, [SplitReport per split])``; ``splits`` as in :func:`~.resolve_split`, each
    split scanned once. One that cannot be listed gets a report with ``error`` set, so the others
    are still checked; a bad ``DATASET.LABELS`` stops everything."""
    class_names = load_checked_class_names(cfg)
    names = {}  # split -> the first name asking for it
    for name in splits:
        names.setdefault(resolve_split(cfg, name), name)
    reports = []
    for split, name in names.items():
        try:
            reports.append(scan_dataset(build_dataset(cfg, name, augment=False), name, progress))
        except DatasetError as e:  # the split could not be listed (scanning raises none)
            reports.append(SplitReport(name, split, cfg.DATASET.N_CLASSES, error=str(e)))
    return class_names, reports


def _share(part, whole):
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _sizes(values):
    """``min / median / max`` of image sides."""
    if not values:
        return "-"
    median = float(np.median(values))
    return f"{min(values)} / {median:.{0 if median.is_integer() else 1}f} / {max(values)}"


def _table(class_names, reports):
    """Aligned columns, one per split: the summary rows, a rule, a row per class."""

    def cells(value, unreadable="-"):
        return [value(r) if r.error is None else unreadable for r in reports]

    def pixels(r, class_id):
        n = int(r.class_pixels[class_id])
        return f"{n:,} ({_share(n, int(r.class_pixels.sum()))})" if n else "never"

    summary = [
        ["split", *[r.split for r in reports]],
        ["samples", *cells(lambda r: str(r.n_samples))],
        ["bad files", *cells(lambda r: str(len(r.bad)), "unreadable")],
        ["height min/median/max", *[_sizes(r.heights) for r in reports]],
        ["width min/median/max", *[_sizes(r.widths) for r in reports]],
        ["ignored pixels", *[_share(r.ignored_pixels, r.total_pixels) for r in reports]],
        ["classes never present", *cells(lambda r: str(len(r.never_present)))],
    ]
    classes = [[f"{i:>3} {class_name}", *cells(lambda r: pixels(r, i))]
               for i, class_name in enumerate(class_names)]
    rows = [["", *[r.name for r in reports]], *summary, *classes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    rule = "  ".join("-" * w for w in widths)
    end = len(summary) + 1
    return [lines[0], rule, *lines[1:end], rule, *lines[end:]]


def format_report(class_names, reports):
    """The table, then absent classes by name, unreadable splits and every bad file, as text."""
    lines, problems = _table(class_names, reports), []
    for r in reports:
        if r.error is not None:
            problems.append(f"{r.name}: split not readable: {r.error}")
            continue
        if r.never_present:
            names = ", ".join(class_names[i] for i in r.never_present)
            problems.append(f"{r.name}: classes never present: {names}")
        problems += [f"{r.name}: bad file {image_id}: {why}" for image_id, why in r.bad.items()]
    if problems:
        lines += ["", *problems]
    bad = sum(len(r.bad) + (r.error is not None) for r in reports)
    lines += ["", "all files readable" if bad == 0 else f"{bad} bad file(s) or split(s)"]
    return "\n".join(lines)
