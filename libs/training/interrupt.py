"""Stopping a run cleanly on SIGINT, SIGTERM or SIGHUP: finish the iteration, save, exit 128 + the
signal. A second Ctrl-C raises :class:`TrainingInterrupted` at once, an exception rather than
``os._exit`` so that a checkpoint being written is abandoned through ``atomic_path``'s cleanup,
never published half-written (docs/scale.md)."""

import signal
import threading
import time

import torch
import torch.distributed as dist

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))  # Windows has no SIGHUP
REPEAT_GRACE_S = 1.0  # torchrun forwards the terminal's SIGINT to processes that already got it


def signal_name(signum):
    """``SIGTERM`` for 15."""
    return signal.Signals(signum).name


class TrainingInterrupted(BaseException):
    """A stop signal ended the run after a finished iteration; the checkpoint holds it. A
    ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except Exception`` on the way
    mistakes it for a failure. ``checkpoint`` is None on the processes that do not write;
    ``iteration`` is None for a second Ctrl-C, which stops at once, mid-iteration."""

    def __init__(self, signum, iteration=None, checkpoint=None, complete=False):
        at = f"at iteration {iteration}" if iteration is not None else "at once"
        super().__init__(f"{signal_name(signum)} {at}")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.complete = complete  # the signal came in the last iteration: nothing to resume
        self.exit_code = 128 + signum


class StopSignals:
    """Context manager: while inside, SIGINT/SIGTERM/SIGHUP set :attr:`signum` instead of killing.
    The previous handlers come back on exit. Outside the main thread Python cannot install handlers,
    and the signals keep their usual effect."""

    def __init__(self):
        self.signum, self.first_at, self.previous = 0, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum, frame):
        now = time.monotonic()
        if not self.signum:
            self.signum, self.first_at = signum, now
        elif signum == signal.SIGINT and now - self.first_at > REPEAT_GRACE_S:
            self.__exit__()  # a third Ctrl-C gets Python's KeyboardInterrupt
            raise TrainingInterrupted(signum)


def agreed_stop(signum, world_size, device):
    """The stop signal every process acts on: the largest of the processes' requests (0: none),
    all-reduced on ``device`` under torchrun (a process stopping alone would hang the others)."""
    if world_size <= 1:
        return signum
    flag = torch.tensor([signum], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def ignore_stop_signals(worker_id=None):
    """DataLoader ``worker_init_fn``: the workers leave the stop signals to the main process
    (Ctrl-C reaches the terminal's whole group; a worker dying of it would fail the iteration)."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
