"""Fully connected CRF post-processing (DeepLab v2): one interface, two backends.

Mean-field inference refines the network's blurry 1/8-resolution output along colour edges and
is the slowest step of evaluation (``docs/eval.md``). ``pydensecrf`` (Krähenbühl's C++ code) runs
in worker processes, ``torch`` (``crf_torch.py``) in this process on the evaluation's device.
``prune_threshold`` (a speed option) keeps only the labels whose probability exceeds it somewhere.
"""

import multiprocessing
import os
from collections import deque
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch

from ..utils.errors import ConfigError
from .crf_torch import torch_crf_posterior, torch_crf_posteriors

BACKENDS = ("pydensecrf", "torch")

# Clipped before -log, as pydensecrf's ``unary_from_softmax`` does: a finite unary for 0.
UNARY_CLIP = 1e-5


@dataclass(frozen=True)
class DenseCRF:
    """Dense CRF with a Gaussian (smoothness) and a bilateral (appearance) Potts kernel.

    ``crf(HxWx3 uint8 RGB image, CxHxW probabilities)`` is the CxHxW posterior, 0 for labels
    pruned away. Frozen: the object travels to worker processes and into the results JSON.
    """

    iter_max: int
    pos_w: float
    pos_xy_std: float
    bi_w: float
    bi_xy_std: float
    bi_rgb_std: float
    prune_threshold: float | None = None
    backend: str = "pydensecrf"
    device: str = field(default="cpu", repr=False)  # where the torch backend computes
    torch_memory_mb: int = field(default=4096, repr=False)  # its batches' memory budget

    def __post_init__(self):
        # YAML gives 3 where 3.0 is meant: each number as its field's type, for the results JSON.
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and f.type in (int, float, float | None):
                object.__setattr__(self, f.name, (int if f.type is int else float)(value))
        if self.prune_threshold is not None and not 0.0 <= self.prune_threshold < 1.0:
            raise ValueError(f"prune_threshold must be in [0, 1), got {self.prune_threshold}")
        if self.backend not in BACKENDS:
            raise ValueError(f"CRF backend must be one of {BACKENDS}, got {self.backend!r}")

    @classmethod
    def from_config(cls, crf_section, device="cpu", backend=None):
        """The CRF of a config's ``CRF`` section, for a model on ``device``; a value it refuses
        names the key. ``backend`` (``eval.py --crf-backend``) overrides ``CRF.BACKEND``, whose
        ``auto`` is ``torch`` on CUDA and ``pydensecrf`` elsewhere (faster on a CPU's cores)."""
        threshold = crf_section.PRUNE_THRESHOLD
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise ConfigError(
                f"CRF.PRUNE_THRESHOLD: must be in [0, 1) or null, got {threshold}", loaded=True)
        backend = backend or crf_section.BACKEND
        if backend == "auto":
            backend = "torch" if torch.device(device).type == "cuda" else "pydensecrf"
        # The parameters are the section's keys of the same names in capitals (ITER_MAX, ...).
        return cls(**{f.name: getattr(crf_section, f.name.upper()) for f in fields(cls)
                      if f.name not in ("backend", "device")},
                   backend=backend, device=str(device))

    def with_prune_threshold(self, prune_threshold):
        """The same CRF with another label-pruning threshold (None: all labels)."""
        return replace(self, prune_threshold=prune_threshold)

    def settings(self):
        """The parameters and the backend as a plain dict, in field order (for the results JSON);
        both backends are the exact CRF, so the results file name does not tell them apart."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "torch_memory_mb")}

    def describe(self, n_jobs=None):
        """The parameters and where they run, for a script's log line."""
        return f"{self} on " + (self.device if self.backend == "torch"
                                else f"{n_jobs or default_n_jobs()} worker processes")

    def __call__(self, image, probmap):
        return _crf_result(self, *self._prepare(image, probmap), argmax=False)

    def _prepare(self, image, probmap):
        """``(image, probmap of the kept labels, kept labels, label count)``, inputs checked; for
        the torch backend as tensors on its device (a probability map there stays there)."""
        image = np.asarray(image)
        if self.backend == "torch":
            probmap = torch.as_tensor(probmap, dtype=torch.float32, device=self.device)
        else:  # a tensor may come from a GPU
            probmap = np.asarray(torch.as_tensor(probmap).detach().cpu(), dtype=np.float32)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"CRF image must be an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        if probmap.ndim != 3 or probmap.shape[1:] != image.shape[:2]:
            raise ValueError(f"CRF probability map must be CxHxW with HxW {image.shape[:2]}, "
                             f"got {probmap.shape}")
        kept = self.kept_labels(probmap)
        if self.backend == "torch":
            kept = torch.as_tensor(kept, device=probmap.device)
            return torch.from_numpy(image).to(self.device), probmap[kept], kept, len(probmap)
        return image, np.ascontiguousarray(probmap[kept]), kept, probmap.shape[0]

    def kept_labels(self, probmap):
        """Indices of the labels inference runs over (all of them when pruning is off), as a
        NumPy array; the same rule for both backends."""
        if self.prune_threshold is None:
            return np.arange(len(probmap))
        flat = torch.as_tensor(probmap).flatten(1)
        above = flat.amax(1) > self.prune_threshold
        # Every pixel's winner is kept, so the CRF's starting point (the argmax) is representable;
        # only pixels with a flat distribution (an untrained net) need the slow strided argmax.
        flat_pixels = flat.amax(0) <= self.prune_threshold
        if flat_pixels.any():
            above[flat[:, flat_pixels].argmax(0).unique()] = True
        return above.nonzero()[:, 0].cpu().numpy()

    def infer(self, image, probmap):
        """Mean-field inference over all labels of ``probmap`` (no pruning), by the backend."""
        if self.backend == "torch":
            return torch_crf_posterior(self, image, probmap)
        import pydensecrf.densecrf as dcrf  # only this backend needs the package

        n_labels, height, width = probmap.shape
        if n_labels == 1:  # nothing to decide; pydensecrf needs two labels
            return np.ones_like(probmap)
        unary = -np.log(np.clip(probmap, UNARY_CLIP, 1.0)).reshape(n_labels, -1)
        crf = dcrf.DenseCRF2D(width, height, n_labels)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        crf.addPairwiseGaussian(sxy=self.pos_xy_std, compat=self.pos_w)
        crf.addPairwiseBilateral(sxy=self.bi_xy_std, srgb=self.bi_rgb_std,
                                 rgbim=np.ascontiguousarray(image), compat=self.bi_w)
        q = crf.inference(self.iter_max)
        return np.asarray(q, dtype=np.float32).reshape(n_labels, height, width)


def legacy_crf_image(image_chw):
    """The image the original implementation fed its CRF, for reproducing its CRF numbers: the
    mean-subtracted network input cast to uint8 as x86 does (truncate, keep the low 8 bits)."""
    values = np.trunc(np.asarray(image_chw, dtype=np.float64)).astype(np.int64)
    return np.ascontiguousarray((values % 256).astype(np.uint8).transpose(1, 2, 0))


def _torch_batches(crf, prepared, argmax):
    """The torch backend's results, in input order, consecutive images of one size (and one
    count of kept labels) sharing a batch while it fits ``crf.torch_memory_mb``."""
    batch = []
    for item in prepared:
        shape = item[2].shape
        # The peak is about 850 + 53 L bytes per pixel (docs/eval.md); this leaves some room.
        fits = max(1, crf.torch_memory_mb * 2**20 // ((1024 + 56 * shape[0]) * shape[1:].numel()))
        if batch and (batch[0][2].shape != shape or len(batch) == fits):
            yield from _finish_batch(crf, batch, argmax)
            batch = []
        batch.append(item)
    if batch:
        yield from _finish_batch(crf, batch, argmax)


def _finish_batch(crf, batch, argmax):
    posteriors = torch_crf_posteriors(crf, [item[1] for item in batch], [item[2] for item in batch])
    for (key, _, _, kept, n_labels), posterior in zip(batch, posteriors):
        yield key, _complete(crf, posterior, kept, n_labels, argmax)


def _crf_result(crf, image, reduced, kept, n_labels, argmax):
    """Inference on one prepared image (in a worker process, for pydensecrf), completed."""
    return _complete(crf, crf.infer(image, reduced), kept, n_labels, argmax)


def _complete(crf, posterior, kept, n_labels, argmax):
    """The posterior over all ``n_labels`` (0 for the labels pruned away), or its argmax."""
    if argmax:  # NumPy or torch alike; a label map comes back as NumPy
        labels = kept[posterior.argmax(0)]
        return labels.cpu().numpy() if crf.backend == "torch" else labels.astype(np.int64)
    if crf.backend == "torch":
        posterior, kept = posterior.cpu().numpy(), kept.cpu().numpy()
    if len(kept) == n_labels:
        return posterior
    full = np.zeros((n_labels,) + posterior.shape[1:], dtype=np.float32)
    full[kept] = posterior
    return full


def default_n_jobs():
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def map_crf(crf, items, n_jobs=None, argmax=False):
    """Run ``crf`` on ``(key, image, probmap)`` items; yield ``(key, result)`` in input order.

    ``result`` is the posterior, or with ``argmax=True`` the HxW int64 label map (cheaper to
    send back), from ``n_jobs`` workers (default: all cores), at most ``2 * n_jobs`` in flight.
    """
    n_jobs = default_n_jobs() if n_jobs is None else int(n_jobs)
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    prepared = ((key, *crf._prepare(image, probmap)) for key, image, probmap in items)
    if crf.backend == "torch":  # in this process, on its device
        yield from _torch_batches(crf, prepared, argmax)
        return
    if n_jobs == 1:
        for key, *prepared_item in prepared:
            yield key, _crf_result(crf, *prepared_item, argmax)
        return

    # fork where available: a spawned worker re-imports eval.py and PyTorch (seconds each); the
    # workers never run PyTorch's thread pools, so forking is safe (as in PyTorch's DataLoader).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(n_jobs) as pool:
        pending = deque()
        for key, *prepared_item in prepared:
            pending.append((key, pool.apply_async(_crf_result, (crf, *prepared_item, argmax))))
            if len(pending) >= 2 * n_jobs:
                key_done, job = pending.popleft()
                yield key_done, job.get()
        for key_done, job in pending:
            yield key_done, job.get()
