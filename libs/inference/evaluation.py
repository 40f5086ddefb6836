"""Scoring a model on a dataset split: one confusion matrix over every labelled pixel.

Shared by eval.py and by train.py (which scores the final model). The entry
points take the config to build the dataset and its loader; everything below
them takes plain values. What is printed and written is in :mod:`.report`.
"""

import time

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..datasets import build_dataset, load_class_names
from .crf import map_crf
from .metric import ConfusionMatrix
from .predict import crf_image, predict_probs
from .report import check_scored, print_and_write, run_settings, score_entries


def _crf_picture(cfg):
    """``image -> HxWx3 uint8 RGB`` for the CRF, from a mean-subtracted network input.

    The one place that knows how :func:`crf_image` wants the config's
    ``IMAGE.MEAN`` and ``CRF.LEGACY_MEAN_SUBTRACTED_IMAGE``.
    """
    return lambda image: crf_image(image, cfg.IMAGE.MEAN, cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE)


def _model_outputs(model, loader, device, tta_scales, flip, crf_picture):
    """Yield ``(label, probs or prediction, crf image or None)`` per image, in dataset order.

    With ``crf_picture`` (see :func:`_crf_picture`) the probabilities and the
    CRF's image come out; without it only the argmax, which is much smaller.
    """
    for _, images, labels in loader:
        # Grad mode is switched off per batch, never across a yield: a suspended
        # generator would otherwise leave it off in the caller's code.
        with torch.inference_mode():
            probs = predict_probs(model, images.to(device), tuple(labels.shape[-2:]),
                                  tta_scales, flip)
            if crf_picture is not None:
                outputs = probs.float().cpu().numpy()
            else:
                outputs = probs.argmax(dim=1).cpu().numpy()
        for image, label, output in zip(images, labels.numpy(), outputs):
            yield label, output, (None if crf_picture is None else crf_picture(image))


def _predictions(outputs, crf, n_jobs):
    """``(label, prediction)`` pairs; with ``crf`` the CRF's, computed in worker processes."""
    if crf is None:
        return ((label, prediction) for label, prediction, _ in outputs)
    items = ((label, image, probs) for label, probs, image in outputs)
    return map_crf(crf, items, n_jobs=n_jobs, argmax=True)


def _confusion(predictions, n_classes, n_images, description, progress):
    """Accumulate ``(label, prediction)`` pairs into a confusion matrix, with a progress bar."""
    matrix = ConfusionMatrix(n_classes)
    with tqdm(total=n_images, desc=description, unit="img", dynamic_ncols=True,
              disable=not progress) as bar:
        for label, prediction in predictions:
            matrix.update(label, prediction)
            bar.update(1)
    return matrix


def evaluate(cfg, model, device, split="test", crf=None, n_jobs=None, tta_scales=(1.0,),
             flip=False, limit=None, progress=True):
    """The confusion matrix of ``model`` (in eval mode) over ``split``, and the image count.

    ``crf`` is a :class:`DenseCRF` or None; it runs in ``n_jobs`` worker
    processes (default: all cores) while the model works on the next images.
    ``tta_scales`` and ``flip`` are the test-time augmentation of
    :func:`predict_probs`. Raises :class:`DatasetError` for a missing or
    unreadable dataset.
    """
    dataset = build_dataset(cfg, split, augment=False)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    # Images of their own size cannot be stacked into a batch. predict_probs pads each
    # to 8k+1 sides and crops its output back to the (unpadded) label size.
    batch_size = 1 if cfg.IMAGE.EVAL_ORIGINAL_SIZE else cfg.SOLVER.BATCH_SIZE.TEST
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=cfg.DATALOADER.NUM_WORKERS)
    crf_picture = None if crf is None else _crf_picture(cfg)
    outputs = _model_outputs(model, loader, device, tta_scales, flip, crf_picture)
    description = "eval" + (" + CRF" if crf else "")
    matrix = _confusion(_predictions(outputs, crf, n_jobs), cfg.DATASET.N_CLASSES,
                        len(dataset), description, progress)
    return matrix, len(dataset)


def score(cfg, model, device, split="test", crf=None, n_jobs=None, tta_scales=(1.0,),
          flip=False, limit=None, extra=None, progress=True):
    """Evaluate and return the results dict (settings, scores, per-class IoU); nothing printed.

    ``extra`` entries lead the dict. Raises :class:`DatasetError` for dataset
    problems and for a split without a labelled pixel.
    """
    class_names = load_class_names(cfg.DATASET.LABELS)
    start = time.perf_counter()
    matrix, n_images = evaluate(cfg, model, device, split, crf, n_jobs, tta_scales, flip,
                                limit, progress)
    elapsed = time.perf_counter() - start
    crf_settings = None if crf is None else {
        **crf.settings(),
        "legacy_mean_subtracted_image": cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE,
    }
    image_size = None if cfg.IMAGE.EVAL_ORIGINAL_SIZE else cfg.IMAGE.SIZE.TEST
    results = dict(extra or {})
    results.update(run_settings(split, n_images, int(matrix.hist.sum()), image_size,
                                tta_scales, flip, crf_settings, elapsed))
    results.update(score_entries(matrix, class_names))
    check_scored(results, cfg.DATASET.ROOT, split)
    return results


def evaluate_and_report(cfg, model, device, output_path, split="test", crf=None, n_jobs=None,
                        tta_scales=(1.0,), flip=False, limit=None, extra=None, progress=True):
    """Evaluate, print the score table, write the results JSON; return the results dict.

    Used by ``eval.py`` and by ``train.py`` after training. ``extra`` entries
    lead the JSON. Raises :class:`DatasetError` for dataset problems (nothing
    is written then).
    """
    results = score(cfg, model, device, split, crf, n_jobs, tta_scales, flip, limit, extra,
                    progress)
    print_and_write(results, output_path, results["seconds"])
    return results
