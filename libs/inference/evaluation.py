"""Scoring a model on a dataset split: one confusion matrix, the score table and JSON.

Shared by eval.py and by train.py (which scores the final model).
"""

import math
import time

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..datasets import DatasetError, build_dataset, load_class_names
from ..utils.atomic import write_json
from .crf import map_crf
from .predict import crf_image, predict_probs
from .metric import SCORE_NAMES, ConfusionMatrix


def _model_outputs(cfg, model, loader, device, scales, flip, want_crf_inputs):
    """Yield ``(label, probs or prediction, crf image or None)`` per image, in dataset order."""
    for _, images, labels in loader:
        # Grad mode is switched off per batch, never across a yield: a suspended
        # generator would otherwise leave it off in the caller's code.
        with torch.inference_mode():
            probs = predict_probs(model, images.to(device), tuple(labels.shape[-2:]), scales, flip)
            if want_crf_inputs:
                outputs = probs.float().cpu().numpy()
            else:
                outputs = probs.argmax(dim=1).cpu().numpy()
        for image, label, output in zip(images, labels.numpy(), outputs):
            yield label, output, (crf_image(image, cfg) if want_crf_inputs else None)


def evaluate(cfg, model, device, split="test", crf=None, n_jobs=None, scales=(1.0,),
             flip=False, limit=None, progress=True):
    """The confusion matrix of ``model`` (in eval mode) over ``split``.

    ``crf`` is a :class:`DenseCRF` or None; it runs in ``n_jobs`` worker
    processes (default: all cores) while the model works on the next images.
    Raises :class:`DatasetError` for a missing or unreadable dataset.
    """
    dataset = build_dataset(cfg, split, augment=False)
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    # Images of their own size cannot be stacked into a batch.
    batch_size = 1 if cfg.IMAGE.EVAL_ORIGINAL_SIZE else cfg.SOLVER.BATCH_SIZE.TEST
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=cfg.DATALOADER.NUM_WORKERS)
    matrix = ConfusionMatrix(cfg.DATASET.N_CLASSES)
    outputs = _model_outputs(cfg, model, loader, device, scales, flip, crf is not None)
    if crf is not None:
        items = ((label, image, prob) for label, prob, image in outputs)
        outputs = ((label, prediction, None)
                   for label, prediction in map_crf(crf, items, n_jobs=n_jobs, argmax=True))
    bar = tqdm(total=len(dataset), desc="eval" + (" + CRF" if crf else ""), unit="img",
               dynamic_ncols=True, disable=not progress)
    with bar:
        for label, prediction, _ in outputs:
            matrix.update(label, prediction)
            bar.update(1)
    return matrix, len(dataset)


def _json_number(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def format_table(results):
    """The four headline scores, then per-class IoU with names ("-": class absent)."""
    lines = [f"{name:<24}{results[name] * 100:6.2f}%" for name in SCORE_NAMES]
    lines.append("")
    lines.append(f"{'id':>4}  {'class':<24}{'IoU':>8}")
    for entry in results["Class IoU"]:
        iou = "-" if entry["iou"] is None else f"{entry['iou'] * 100:7.2f}%"
        lines.append(f"{entry['id']:>4}  {entry['name']:<24}{iou:>8}")
    return "\n".join(lines)


def evaluate_and_report(cfg, model, device, output_path, split="test", crf=None, n_jobs=None,
                        scales=(1.0,), flip=False, limit=None, extra=None, progress=True):
    """Evaluate, print the score table, write the results JSON; return the results dict.

    Used by ``eval.py`` and by ``train.py`` after training. Raises
    :class:`DatasetError` for dataset problems (nothing is written then).
    """
    class_names = load_class_names(cfg.DATASET.LABELS)
    start = time.perf_counter()
    matrix, n_images = evaluate(cfg, model, device, split, crf, n_jobs, scales, flip, limit,
                                progress)
    elapsed = time.perf_counter() - start
    scores = matrix.scores()
    results = dict(extra or {})
    results.update({
        "split": split,
        "n_images": n_images,
        "n_pixels": int(matrix.hist.sum()),
        "image_size": None if cfg.IMAGE.EVAL_ORIGINAL_SIZE else cfg.IMAGE.SIZE.TEST,
        "scales": list(scales),
        "flip": bool(flip),
        "crf": None if crf is None else {
            "iter_max": crf.iter_max, "pos_w": crf.pos_w, "pos_xy_std": crf.pos_xy_std,
            "bi_w": crf.bi_w, "bi_xy_std": crf.bi_xy_std, "bi_rgb_std": crf.bi_rgb_std,
            "prune_threshold": crf.prune_threshold,
            "legacy_mean_subtracted_image": cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE,
        },
        "seconds": round(elapsed, 3),
        "images_per_second": round(n_images / elapsed, 4) if elapsed > 0 else None,
    })
    for name in SCORE_NAMES:
        results[name] = _json_number(scores[name])
    results["n_classes_in_ground_truth"] = int((matrix.hist.sum(axis=1) > 0).sum())
    results["Class IoU"] = [
        {"id": i, "name": class_names[i], "iou": _json_number(scores["Class IoU"][i])}
        for i in range(cfg.DATASET.N_CLASSES)
    ]
    results["confusion_matrix"] = matrix.hist.tolist()
    if any(results[name] is None for name in SCORE_NAMES):
        raise DatasetError(f"{cfg.DATASET.ROOT}: split {split!r} has no labelled pixel to score")

    tqdm.write(format_table(results))
    tqdm.write(f"\n{n_images} images in {elapsed:.1f} s "
               f"({n_images / max(elapsed, 1e-9):.3f} images/s); results: {output_path}")
    write_json(results, output_path)
    return results
