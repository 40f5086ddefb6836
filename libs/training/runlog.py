"""What a run tells its user in words: the start summary, ``train.log`` and the final scores.

``train.log`` sits next to the TensorBoard events (``EXP.LOG_DIR/EXP.ID``). It
is a log, so it is opened in append mode and flushed line by line: each launch
(a resumed one too) adds a separator line, the summary, the loss every
``SOLVER.ITER_TB`` iterations and, when ``train.py`` scores the model, the
final scores. :func:`record_scores` takes those scores as a plain dict, so
this package never needs to know how evaluation works.
"""

import datetime
import math

import torch
import yaml

from ..utils.meters import SCORE_LABELS

from .tensorboard import log_dir, open_writer

LOG_NAME = "train.log"


def log_path(exp):
    """``EXP.LOG_DIR/EXP.ID/train.log``."""
    return log_dir(exp) / LOG_NAME


class TextLog:
    """``train.log``, opened in append mode; :meth:`write` adds one flushed line per line."""

    def __init__(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a", encoding="utf-8")  # a log: appended, never replaced

    def write(self, text):
        for line in str(text).splitlines() or [""]:
            self.file.write(line.rstrip() + "\n")
        self.file.flush()

    def separator(self):
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        self.write(f"===== launch {stamp} " + "=" * 40)

    def close(self):
        self.file.close()


def device_text(device, world_size, data_parallel):
    """``cpu``, ``cuda:0 (NVIDIA H100)``, ``4 GPUs (DataParallel)``; and the world size."""
    if data_parallel:
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        text = f"{torch.cuda.device_count()} GPUs (DataParallel: {', '.join(names)})"
    elif device.type == "cuda":
        text = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        text = str(device)
    return f"{text}; world size {world_size}" + (" (torchrun)" if world_size > 1 else "")


def parameter_counts(model):
    """``(trainable, total)`` parameter counts of ``model``."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def summary_lines(cfg, run):
    """The start-of-training summary block, one string per line.

    ``run`` holds the plain facts the loop knows: ``device``, ``world_size``,
    ``data_parallel``, ``sources`` (``{"config": path, "overrides": [...]}`` or
    None), ``n_train``, ``n_test`` (None: unknown), ``model``, ``start``,
    ``checkpoints`` (a folder).
    """
    solver, sources = cfg.SOLVER, run.get("sources") or {}
    trainable, total = parameter_counts(run["model"])
    batch, iter_size, world = solver.BATCH_SIZE.TRAIN, solver.ITER_SIZE, run["world_size"]
    overrides = list(sources.get("overrides") or [])
    n_test = run.get("n_test")
    split = cfg.DATASET.SPLIT
    return [
        "Training summary",
        f"  config:       {sources.get('config', '(given as an object)')}",
        f"  overrides:    {' '.join('--set ' + o for o in overrides) if overrides else 'none'}",
        f"  device:       {device_text(run['device'], world, run['data_parallel'])}",
        f"  data:         {run['n_train']} train samples (split {split.TRAIN!r}), "
        f"{'unknown' if n_test is None else n_test} test samples (split {split.TEST!r})",
        f"  model:        {cfg.MODEL.NAME}, {total:,} parameters ({trainable:,} trainable)",
        f"  batch:        {batch * iter_size * world} images per update = {batch} "
        f"(BATCH_SIZE.TRAIN) x {iter_size} (ITER_SIZE) x {world} (world size)",
        f"  iterations:   {run['start'] + 1}..{solver.ITER_MAX}"
        + (f" (resumed at {run['start']})" if run["start"] else ""),
        f"  checkpoints:  {run['checkpoints']}",
        f"  TensorBoard:  {log_dir(cfg.EXP)} (this summary and the losses: "
        f"{log_path(cfg.EXP)})",
    ]


def loss_line(iteration, iter_max, loss, average, base_lr):
    """One ``train.log`` line of the loss, its moving average and the base learning rate."""
    return (f"iter {iteration}/{iter_max}  loss {loss:.4f}  moving average {average:.4f}  "
            f"lr {base_lr:.6g}")


def config_markdown(cfg):
    """The merged config as YAML in a Markdown code block (TensorBoard's text tab)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    return f"```yaml\n{text}```"


def score_lines(scores, heading="Final scores"):
    """The headline scores of a results dict as ``train.log`` lines (percent), README order."""
    where = ""
    if "split" in scores:
        where = f" (split {scores['split']!r}, {scores.get('n_images', '?')} images)"
    lines = [f"{heading}{where}:"]
    for key, label in SCORE_LABELS.items():
        if scores.get(key) is not None:
            lines.append(f"  {label:<24}{scores[key] * 100:6.2f}%")
    return lines


def add_score_scalars(writer, scores, step):
    """The headline scores as ``eval/<key>`` scalars (``eval/mean_iou``, ...) at ``step``.

    Keys that are missing or not finite numbers are left out.
    """
    for key in SCORE_LABELS:
        value = scores.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(f"eval/{key}", value, step)


def record_scores(cfg, scores):
    """Write the final scores (a plain dict, e.g. the results of an evaluation) to the run.

    Appends them to ``train.log`` and adds them to TensorBoard as ``eval/<key>``
    scalars at step ``SOLVER.ITER_MAX`` (:func:`add_score_scalars`).
    """
    text = TextLog(log_path(cfg.EXP))
    try:
        text.write("\n".join(score_lines(scores)))
    finally:
        text.close()
    writer = open_writer(log_dir(cfg.EXP))
    try:
        add_score_scalars(writer, scores, cfg.SOLVER.ITER_MAX)
    finally:
        writer.close()
