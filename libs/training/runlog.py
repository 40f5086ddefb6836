"""What a run tells its user: the start summary, ``train.log``, the bar, the scalars, the scores.
``train.log`` (beside the TensorBoard events) is only appended to, so a resumed run continues it.
:func:`record_scores` takes a plain dict: this package never needs to know how evaluation works."""

import datetime
import sys
from collections import deque

import torch
import yaml

from ..datasets import build_dataset, load_class_names
from ..utils.errors import DeepLabError
from ..utils.meters import SCORE_LABELS, MovingAverage
from .checkpoint import checkpoint_dir
from .tensorboard import add_score_scalars, log_dir, log_images, open_writer

LOG_NAME = "train.log"


def append_to_log(exp, text):
    """Append ``text`` to the run's ``train.log``, one line per line (trailing spaces dropped)."""
    path = log_dir(exp) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as file:  # a log: appended, never replaced
        file.writelines(line.rstrip() + "\n" for line in str(text).splitlines())


def device_text(device, world_size, data_parallel):
    """``cpu``, ``cuda:0 (NVIDIA H100)``, ``4 GPUs (DataParallel)``; and the world size."""
    text = str(device)
    if data_parallel:
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        text = f"{torch.cuda.device_count()} GPUs (DataParallel: {', '.join(names)})"
    elif device.type == "cuda":
        text = f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{text}; world size {world_size}" + (" (torchrun)" if world_size > 1 else "")


def start_log(run, launch, start, n_train, log):
    """Print the start-of-training summary of the loop's :class:`~.loop.Run` and ``Launch`` and
    append it to ``train.log`` after a separator line (each launch adds one). The test split is
    counted where it can be read (training needs none)."""
    cfg, solver, sources = run.cfg, run.cfg.SOLVER, launch.sources or {}
    parameters = list(run.model.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    batch, iter_size, world = solver.BATCH_SIZE.TRAIN, solver.ITER_SIZE, run.world_size
    overrides = list(sources.get("overrides") or [])
    try:
        n_test = len(build_dataset(cfg, "test", augment=False))
    except DeepLabError:
        n_test = "unknown"
    split = cfg.DATASET.SPLIT
    lines = "\n".join([
        "Training summary",
        f"  config:       {sources.get('config', '(given as an object)')}",
        f"  overrides:    {' '.join('--set ' + o for o in overrides) if overrides else 'none'}",
        f"  device:       {device_text(run.device, world, launch.data_parallel)}",
        f"  data:         {n_train} train samples (split {split.TRAIN!r}), "
        f"{n_test} test samples (split {split.TEST!r})",
        f"  model:        {cfg.MODEL.NAME}, {total:,} parameters ({trainable:,} trainable)",
        f"  batch:        {batch * iter_size * world} images per update = {batch} "
        f"(BATCH_SIZE.TRAIN) x {iter_size} (ITER_SIZE) x {world} (world size)",
        f"  iterations:   {start + 1}..{solver.ITER_MAX}"
        + (f" (resumed at {start})" if start else ""),
        f"  checkpoints:  {checkpoint_dir(cfg.EXP)}",
        f"  TensorBoard:  {log_dir(cfg.EXP)} (this summary and the losses: "
        f"{log_dir(cfg.EXP) / LOG_NAME})",
    ])
    log(lines)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    append_to_log(cfg.EXP, f"===== launch {stamp} " + "=" * 40 + "\n" + lines)


def score_lines(scores, heading="Final scores"):
    """The headline scores of a results dict as ``train.log`` lines (percent), README order."""
    lines = [f"{heading} (split {scores['split']!r}, {scores.get('n_images', '?')} images):"
             if "split" in scores else f"{heading}:"]
    return lines + [f"  {label:<24}{scores[key] * 100:6.2f}%" for key, label in SCORE_LABELS.items()
                    if scores.get(key) is not None]


def record_scores(cfg, scores):
    """Write the final scores (a plain dict, e.g. the results of an evaluation) to the run:
    ``train.log``, and ``eval/<key>`` scalars at step ``SOLVER.ITER_MAX`` in TensorBoard."""
    append_to_log(cfg.EXP, "\n".join(score_lines(scores)))
    with open_writer(log_dir(cfg.EXP)) as writer:
        add_score_scalars(writer, scores, cfg.SOLVER.ITER_MAX)


def peak_memory_gib(device):
    """Peak memory so far in GiB: allocated tensors on CUDA, the process's resident set on the
    CPU; ``None`` where neither is known (no ``resource`` module: Windows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class Throughput:
    """Images per second over the last ``window`` iterations."""

    def __init__(self, window):
        self.images, self.seconds = deque(maxlen=window), deque(maxlen=window)

    def add(self, images, seconds):
        self.images.append(images)
        self.seconds.append(max(seconds, 1e-9))
        return images / self.seconds[-1]

    @property
    def value(self):
        return sum(self.images) / sum(self.seconds)


def postfix(average_loss, base_lr, images_per_s, peak_gib):
    """The progress bar's ``loss``, ``lr``, ``img/s`` and ``mem`` fields."""
    fields = {"loss": f"{average_loss:.4f}", "lr": f"{base_lr:.3g}", "img/s": f"{images_per_s:.3g}"}
    if peak_gib is not None:
        fields["mem"] = f"{peak_gib:.2f}GiB"
    return fields


class Monitor:
    """Rank 0's view of each update: TensorBoard, ``train.log`` every ``SOLVER.ITER_TB``, the bar.
    ``run`` is the loop's :class:`~.loop.Run`. The merged config goes to TensorBoard as text
    ``config`` at step ``start``; a resumed run (``start`` > 0) purges the steps after it."""

    def __init__(self, run, start=0):
        cfg, solver = run.cfg, run.cfg.SOLVER
        self.writer = open_writer(log_dir(cfg.EXP), purge_step=start + 1 if start else None)
        config = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
        self.writer.add_text("config", f"```yaml\n{config}```", start)  # Markdown: the text tab
        self.run, self.start = run, start
        self.average = MovingAverage(solver.AVERAGE_LOSS)
        self.speed = Throughput(solver.AVERAGE_LOSS)
        self.images_per_update = solver.BATCH_SIZE.TRAIN * solver.ITER_SIZE * run.world_size
        self.class_names = load_class_names(cfg.DATASET.LABELS)  # the image panel's legend

    def update(self, iteration, loss, base_lr, seconds, last_batch, fused):
        """Log one update; returns the postfix for the progress bar."""
        cfg, device, writer = self.run.cfg, self.run.device, self.writer
        self.average.add(loss)
        images_per_s = self.speed.add(self.images_per_update, seconds)
        peak = peak_memory_gib(device)
        writer.add_scalar("loss/train", loss, iteration)
        writer.add_scalar("loss/train_moving_average", self.average.value, iteration)
        for group in self.run.optimizer.param_groups:
            writer.add_scalar(f"lr/{group['name']}", group["lr"], iteration)
        if device.type == "cuda":
            writer.add_scalar("memory/max_allocated_GB", peak, iteration)
        writer.add_scalar("speed/images_per_s", images_per_s, iteration)
        if peak is not None:
            writer.add_scalar("memory/peak_gib", peak, iteration)
        if self.run.precision.scaler.is_enabled():
            writer.add_scalar("amp/loss_scale", self.run.precision.scaler.get_scale(), iteration)
        if iteration % cfg.SOLVER.ITER_TB == 0:
            append_to_log(cfg.EXP, f"iter {iteration}/{cfg.SOLVER.ITER_MAX}  loss {loss:.4f}  "
                                   f"moving average {self.average.value:.4f}  lr {base_lr:.6g}")
            log_images(writer, last_batch, fused, cfg, iteration, self.class_names)
        if iteration == self.start + 1 and device.type == "cuda":
            # cuDNN's autotuning tries algorithms with large workspaces in the first iteration
            # only; the peak that matters is the steady state's (docs/scale.md).
            torch.cuda.reset_peak_memory_stats(device)
        return postfix(self.average.value, base_lr, self.speed.value, peak)

    def record_scores(self, iteration, scores):
        """Scores of a periodic evaluation (``SOLVER.ITER_EVAL``): ``train.log`` and ``eval/*``."""
        add_score_scalars(self.writer, scores, iteration)
        lines = score_lines(scores, heading=f"Scores at iteration {iteration}")
        append_to_log(self.run.cfg.EXP, "\n".join(lines))
        return lines
