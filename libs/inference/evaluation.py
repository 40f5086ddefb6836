"""Scoring a model on a dataset split: one confusion matrix over every labelled pixel. Shared
by eval.py and train.py, so both write the same results JSON and print the same score table."""

import math
import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..datasets import build_dataset, load_class_names
from ..utils.errors import DatasetError
from ..models.zoo import results_stem
from ..utils.atomic import write_json
from ..utils.meters import SCORE_LABELS
from .crf import map_crf
from .metric import SCORE_NAMES, ConfusionMatrix
from .predict import crf_image, predict_probs


@dataclass(frozen=True)
class EvalOptions:
    """How a split is scored. Every setting that changes the scores is in the results name."""

    split: str = "test"  # 'test'/'train' (DATASET.SPLIT) or a literal split name
    crf: object = None  # a DenseCRF or None; it runs while the model works on the next images
    n_jobs: int | None = None  # CRF worker processes (default: all cores)
    tta_scales: tuple = (1.0,)  # test-time augmentation of predict_probs
    flip: bool = False
    limit: int | None = None  # score only the first N images
    progress: bool = True


def default_output_path(model_path, options=EvalOptions(), released_dir="."):
    """``<model stem>_<split>[_first<N>][_ms..][_flip][_crf[-prune<t>]].json`` next to the model,
    so a quick check never replaces a full result; for a released model's name (its file sits
    in the torch hub cache) in ``released_dir``."""
    model_path = results_stem(model_path, released_dir)
    suffix = f"_{options.split}"
    if options.limit is not None:
        suffix += f"_first{options.limit}"
    if tuple(options.tta_scales) != (1.0,):
        suffix += "_ms" + "-".join(f"{s:g}" for s in options.tta_scales)
    if options.flip:
        suffix += "_flip"
    if options.crf is not None:
        suffix += "_crf"
        if options.crf.prune_threshold is not None:
            suffix += f"-prune{options.crf.prune_threshold:g}"
    return model_path.with_name(model_path.stem + suffix + ".json")


def _model_outputs(cfg, model, loader, device, options):
    """Yield ``(label, prediction)`` per image in dataset order, or with a CRF ``(label, CRF
    picture, probabilities)``, the probabilities left on the model's device for the torch CRF."""
    crf, legacy = options.crf, cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE
    for _, images, labels in loader:
        # Grad mode is switched off per batch, never across a yield: a suspended
        # generator would otherwise leave it off in the caller's code.
        with torch.inference_mode():
            probs = predict_probs(model, images.to(device), tuple(labels.shape[-2:]),
                                  options.tta_scales, options.flip)
        if crf is None:
            yield from zip(labels.numpy(), probs.argmax(dim=1).cpu().numpy())
            continue
        probs = probs.float() if crf.backend == "torch" else probs.float().cpu().numpy()
        for image, label, output in zip(images, labels.numpy(), probs):
            yield label, crf_image(image, cfg.IMAGE.MEAN, legacy), output


def evaluate(cfg, model, device, options=EvalOptions()):
    """The confusion matrix of ``model`` (in eval mode) over ``options.split``, and the image
    count; :class:`DatasetError` for a missing or unreadable dataset."""
    dataset = build_dataset(cfg, options.split, augment=False)
    if options.limit is not None:
        dataset = Subset(dataset, range(min(options.limit, len(dataset))))
    # Images of their own size cannot be stacked into a batch (predict_probs pads each one).
    batch_size = 1 if cfg.IMAGE.EVAL_ORIGINAL_SIZE else cfg.SOLVER.BATCH_SIZE.TEST
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=cfg.DATALOADER.NUM_WORKERS)
    crf = options.crf
    predictions = _model_outputs(cfg, model, loader, device, options)
    if crf is not None:
        predictions = map_crf(crf, predictions, n_jobs=options.n_jobs, argmax=True)
    matrix = ConfusionMatrix(cfg.DATASET.N_CLASSES)
    with tqdm(total=len(dataset), desc="eval" + (" + CRF" if crf else ""), unit="img",
              dynamic_ncols=True, disable=not options.progress) as bar:
        for label, prediction in predictions:
            matrix.update(label, prediction)
            bar.update(1)
    return matrix, len(dataset)


def _json_number(value):
    """NaN (a class absent from truth and prediction) becomes JSON's null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def score(cfg, model, device, options=EvalOptions(), extra=None):
    """Evaluate and return the results dict (``extra`` first, then settings, scores, per-class
    IoU); :class:`DatasetError` for dataset problems and for a split without a labelled pixel."""
    class_names = load_class_names(cfg.DATASET.LABELS)
    start = time.perf_counter()
    matrix, n_images = evaluate(cfg, model, device, options)
    elapsed = time.perf_counter() - start
    scores = matrix.scores()
    results = {
        **(extra or {}),
        "split": options.split, "n_images": n_images, "n_pixels": int(matrix.hist.sum()),
        "image_size": None if cfg.IMAGE.EVAL_ORIGINAL_SIZE else cfg.IMAGE.SIZE.TEST,
        "scales": list(options.tta_scales), "flip": bool(options.flip),
        "crf": None if options.crf is None else {
            **options.crf.settings(),
            "legacy_mean_subtracted_image": cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE},
        "seconds": round(elapsed, 3),
        "images_per_second": round(n_images / elapsed, 4) if elapsed > 0 else None,
        **{name: _json_number(scores[name]) for name in SCORE_NAMES},
        "n_classes_in_ground_truth": int((matrix.hist.sum(axis=1) > 0).sum()),
        "class_iou": [{"id": i, "name": class_names[i], "iou": _json_number(iou)}
                      for i, iou in scores["class_iou"].items()],
        "confusion_matrix": matrix.hist.tolist(),
    }
    if any(results[name] is None for name in SCORE_NAMES):
        raise DatasetError(f"{cfg.DATASET.ROOT}: split {options.split!r} has no labelled pixel "
                           "to score")
    return results


def format_table(results):
    """The four headline scores, then per-class IoU with names ("-": class absent)."""
    lines = [f"{label:<24}{results[key] * 100:6.2f}%" for key, label in SCORE_LABELS.items()]
    lines.append("")
    lines.append(f"{'id':>4}  {'class':<24}{'IoU':>8}")
    for entry in results["class_iou"]:
        iou = "-" if entry["iou"] is None else f"{entry['iou'] * 100:7.2f}%"
        lines.append(f"{entry['id']:>4}  {entry['name']:<24}{iou:>8}")
    return "\n".join(lines)


def evaluate_and_report(cfg, model, device, output_path, options=EvalOptions(), extra=None):
    """Evaluate, print the score table and the throughput, write the results JSON (``extra``
    first) and return it; after a :class:`DatasetError` nothing is written."""
    results = score(cfg, model, device, options, extra)
    n_images, elapsed = results["n_images"], results["seconds"]
    tqdm.write(format_table(results))
    tqdm.write(f"\n{n_images} images in {elapsed:.1f} s "
               f"({n_images / max(elapsed, 1e-9):.3f} images/s); results: {output_path}")
    write_json(results, output_path)
    return results
