"""What the main process shows of each iteration: the progress-bar postfix and TensorBoard."""

import sys
from collections import deque

import torch

from ..datasets import load_class_names
from ..utils.meters import MovingAverage
from .runlog import add_score_scalars, config_markdown, loss_line, score_lines
from .tensorboard import log_dir, log_images, log_scalars, log_speed, open_writer


def peak_memory_gib(device):
    """Peak memory so far in GiB: allocated tensors on CUDA, the process's resident set on the CPU.

    ``None`` where neither is known (a CPU run without the ``resource`` module).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class Throughput:
    """Images per second over the last ``window`` iterations."""

    def __init__(self, window):
        self.images = deque(maxlen=window)
        self.seconds = deque(maxlen=window)

    def add(self, images, seconds):
        self.images.append(images)
        self.seconds.append(max(seconds, 1e-9))
        return images / self.seconds[-1]

    @property
    def value(self):
        return sum(self.images) / sum(self.seconds)


class Monitor:
    """TensorBoard (every iteration, images every ``SOLVER.ITER_TB``), ``train.log`` and the bar.

    ``images_per_iteration`` counts the whole update: sub-batches times
    ``ITER_SIZE`` times processes. ``text_log`` (a :class:`~.runlog.TextLog`
    or None) gets the loss every ``SOLVER.ITER_TB`` iterations and is closed
    with the monitor. The merged config goes to TensorBoard as text ``config``
    at step ``start``; a resumed run (``start`` > 0) purges the steps after it.
    """

    def __init__(self, cfg, device, optimizer, scaler, images_per_iteration, text_log=None,
                 start=0):
        self.writer = open_writer(log_dir(cfg.EXP), purge_step=start + 1 if start else None)
        self.writer.add_text("config", config_markdown(cfg), start)
        self.text_log = text_log
        self.average = MovingAverage(cfg.SOLVER.AVERAGE_LOSS)
        self.speed = Throughput(cfg.SOLVER.AVERAGE_LOSS)
        self.cfg, self.device, self.optimizer, self.scaler = cfg, device, optimizer, scaler
        self.images_per_iteration = images_per_iteration
        self.class_names = load_class_names(cfg.DATASET.LABELS)  # the image panel's legend
        self.first = True

    def update(self, iteration, loss, base_lr, seconds, last_batch, fused):
        """Log one iteration; returns the postfix for the progress bar."""
        self.average.add(loss)
        images_per_s = self.speed.add(self.images_per_iteration, seconds)
        peak = peak_memory_gib(self.device)
        log_scalars(self.writer, iteration, loss, self.average.value, self.optimizer, self.device)
        log_speed(self.writer, iteration, images_per_s, peak, self.scaler)
        dataset = self.cfg.DATASET
        if iteration % self.cfg.SOLVER.ITER_TB == 0:
            if self.text_log is not None:
                self.text_log.write(loss_line(iteration, self.cfg.SOLVER.ITER_MAX, loss,
                                              self.average.value, base_lr))
            _, images, labels = last_batch
            log_images(self.writer, images, labels, fused, dataset.N_CLASSES,
                       dataset.IGNORE_LABEL, self.cfg.IMAGE.MEAN, iteration, self.class_names)
        if self.first and self.device.type == "cuda":
            # cuDNN's autotuning (cudnn.benchmark) tries algorithms with large workspaces in the
            # first iteration only; the peak that matters is the steady state's (an fp32 run on
            # an H200 peaked at 69.6 GiB with autotuning, 7.1 GiB without it).
            torch.cuda.reset_peak_memory_stats(self.device)
        self.first = False
        return postfix(self.average.value, base_lr, self.speed.value, peak)

    def record_scores(self, iteration, scores):
        """Scores of a periodic evaluation (``SOLVER.ITER_EVAL``): ``train.log`` and ``eval/*``."""
        add_score_scalars(self.writer, scores, iteration)
        lines = score_lines(scores, heading=f"Scores at iteration {iteration}")
        if self.text_log is not None:
            self.text_log.write("\n".join(lines))
        return lines

    def close(self):
        self.writer.close()
        if self.text_log is not None:
            self.text_log.close()


def postfix(average_loss, base_lr, images_per_s, peak_gib):
    """The progress bar's ``loss``, ``lr``, ``img/s`` and ``mem`` fields."""
    fields = {"loss": f"{average_loss:.4f}", "lr": f"{base_lr:.3g}",
              "img/s": f"{images_per_s:.3g}"}
    if peak_gib is not None:
        fields["mem"] = f"{peak_gib:.2f}GiB"
    return fields
