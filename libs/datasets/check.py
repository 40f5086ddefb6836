"""Scan a dataset once and say what is in it and what is broken (``python -m libs.cli.check``).

A bad file found mid-way through a long training run costs the run; a class that
never occurs, or labels that are mostly the ignore value, silently cost the scores.
This module reads every sample of a split through the dataset's own reader
(``read_sample`` of :class:`~libs.datasets.base.SegmentationDataset`: the same checks
training applies, without the augmentation), keeps going past bad files, and gathers
what a user needs to trust a new dataset: counts, image sizes, the per-class pixel
histogram, the ignored share and every bad file with its reason. Bad samples are
also recorded in the dataset's ``bad_samples``, as its skip mode would.
"""

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from . import build_dataset, load_checked_class_names, resolve_split
from .errors import DatasetError

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

    def add(self, image, label, ignore_label):
        """Count one good sample (labels are already checked to be classes or ignore)."""
        self.heights.append(image.shape[0])
        self.widths.append(image.shape[1])
        ignored = label == ignore_label
        self.ignored_pixels += int(ignored.sum())
        self.class_pixels += np.bincount(label[~ignored].ravel(), minlength=self.n_classes)

    @property
    def labelled_pixels(self):
        return int(self.class_pixels.sum())

    @property
    def total_pixels(self):
        return self.labelled_pixels + self.ignored_pixels

    @property
    def never_present(self):
        """Class ids without a single pixel in the readable samples."""
        return [int(i) for i in np.flatnonzero(self.class_pixels == 0)]

    @property
    def ok(self):
        return self.error is None and not self.bad


def scan_dataset(dataset, name=None, progress=True):
    """Read every sample of ``dataset`` once (no augmentation); never stop at a bad file.

    ``dataset`` is any reader built on ``SegmentationDataset`` (``ids``, ``read_sample``,
    ``n_classes``, ``ignore_label``, ``bad_samples``). Duplicate ids in a list are read once.
    """
    report = SplitReport(name or dataset.split, dataset.split, dataset.n_classes)
    ids = list(dict.fromkeys(dataset.ids))
    report.n_samples = len(ids)
    bar = tqdm(ids, desc=f"check {report.name}", unit="img", dynamic_ncols=True,
               disable=not progress, leave=False)
    for image_id in bar:
        try:
            image, label = dataset.read_sample(image_id)
        except DatasetError as e:
            dataset.bad_samples[image_id] = str(e)
            report.bad[image_id] = str(e)
            continue
        report.add(image, label, dataset.ignore_label)
    return report


def check_config(cfg, splits=DEFAULT_SPLITS, progress=True):
    """``(class names, [SplitReport per split])`` for the dataset of ``cfg``.

    ``splits`` are ``"train"``/``"test"`` (``DATASET.SPLIT``) or literal names; two that
    name the same split are scanned once. A split whose list or root cannot be read
    becomes a report with ``error`` set, so the other splits are still checked; a bad
    ``DATASET.LABELS`` stops everything (no report can name the classes).
    """
    class_names = load_checked_class_names(cfg)
    reports, seen = [], set()
    for name in splits:
        split = resolve_split(cfg, name)
        if split in seen:
            continue
        seen.add(split)
        try:
            dataset = build_dataset(cfg, name, augment=False)
        except DatasetError as e:
            reports.append(SplitReport(name, split, cfg.DATASET.N_CLASSES, error=str(e)))
            continue
        reports.append(scan_dataset(dataset, name, progress))
    return class_names, reports


def all_ok(reports):
    """True when no split had a bad file or an unreadable list (the command's exit code 0)."""
    return all(report.ok for report in reports)


def _share(part, whole):
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _median(values):
    m = float(np.median(values))
    return f"{m:.0f}" if m.is_integer() else f"{m:.1f}"


def _size_cell(values):
    if not values:
        return "-"
    return f"{min(values)} / {_median(values)} / {max(values)}"


def _summary_rows(reports):
    """The rows above the class histogram: one cell per split."""
    rows = [
        ("split", [r.split for r in reports]),
        ("samples", [str(r.n_samples) if r.error is None else "-" for r in reports]),
        ("bad files", [str(len(r.bad)) if r.error is None else "unreadable" for r in reports]),
        ("height min/median/max", [_size_cell(r.heights) for r in reports]),
        ("width min/median/max", [_size_cell(r.widths) for r in reports]),
        ("ignored pixels", [_share(r.ignored_pixels, r.total_pixels) for r in reports]),
        ("classes never present", [str(len(r.never_present)) if r.error is None else "-"
                                   for r in reports]),
    ]
    return rows


def _class_rows(reports, class_names):
    """One row per class: its pixels and share of the labelled pixels, per split."""
    rows = []
    for class_id, class_name in enumerate(class_names):
        cells = []
        for r in reports:
            pixels = int(r.class_pixels[class_id])
            if r.error is not None:
                cells.append("-")
            elif pixels == 0:
                cells.append("never")
            else:
                cells.append(f"{pixels:,} ({_share(pixels, r.labelled_pixels)})")
        rows.append((f"{class_id:>3} {class_name}", cells))
    return rows


def _render(header, rows, rule_after):
    """Aligned text columns; a rule under the header and after row ``rule_after``."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(header), rule]
    for number, row in enumerate(rows):
        lines.append(line(row))
        if number == rule_after:
            lines.append(rule)
    return lines


def _problem_lines(reports, class_names):
    """Below the table: absent classes by name, unreadable splits and every bad file."""
    lines = []
    for r in reports:
        if r.error is not None:
            lines.append(f"{r.name}: split not readable: {r.error}")
            continue
        if r.never_present:
            names = ", ".join(class_names[i] for i in r.never_present)
            lines.append(f"{r.name}: classes never present: {names}")
        lines.extend(f"{r.name}: bad file {image_id}: {reason}"
                     for image_id, reason in r.bad.items())
    return lines


def format_report(class_names, reports):
    """The whole report as text: the table (a column per split), then the problems."""
    summary = _summary_rows(reports)
    classes = _class_rows(reports, class_names)
    header = ["", *[r.name for r in reports]]
    rows = [[label, *cells] for label, cells in summary + classes]
    lines = _render(header, rows, rule_after=len(summary) - 1)
    problems = _problem_lines(reports, class_names)
    if problems:
        lines += ["", *problems]
    bad = sum(len(r.bad) for r in reports) + sum(r.error is not None for r in reports)
    lines += ["", "all files readable" if bad == 0 else f"{bad} bad file(s) or split(s)"]
    return "\n".join(lines)
