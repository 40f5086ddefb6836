"""What an evaluation leaves behind: the results dict, its JSON file and the score table.

Everything here takes plain values (a confusion matrix, class names, the
settings of the run), so the same report comes out of eval.py and of train.py's
final evaluation.
"""

import math

from tqdm import tqdm

from ..datasets import DatasetError
from ..models.zoo import results_stem
from ..utils.atomic import write_json
from ..utils.meters import SCORE_LABELS
from .metric import SCORE_NAMES


def default_output_path(model_path, split, crf=None, tta_scales=(1.0,), flip=False,
                        released_dir=".", limit=None):
    """``<model stem>_<split>[_first<N>][_ms..][_flip][_crf[-prune<t>]].json`` next to the model.

    The one name pattern of every results file (eval.py's and the score that
    train.py writes after training). Every setting that changes the scores is
    in the name, so a quick check (``limit`` images, a pruned CRF, another
    split) never replaces a full result. ``crf`` is the :class:`DenseCRF` that
    runs (or None). A released model's name (``voc12``) has no folder
    of its own (its file sits in the torch hub cache), so its results go to
    ``released_dir/<name>_<split>...json``.
    """
    model_path = results_stem(model_path, released_dir)
    suffix = f"_{split}"
    if limit is not None:
        suffix += f"_first{limit}"
    if tuple(tta_scales) != (1.0,):
        suffix += "_ms" + "-".join(f"{s:g}" for s in tta_scales)
    if flip:
        suffix += "_flip"
    if crf is not None:
        suffix += "_crf"
        if crf.prune_threshold is not None:
            suffix += f"-prune{crf.prune_threshold:g}"
    return model_path.with_name(model_path.stem + suffix + ".json")


def _json_number(value):
    """NaN (a class absent from truth and prediction) becomes JSON's null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def run_settings(split, n_images, n_pixels, image_size, tta_scales, flip, crf_settings,
                 elapsed):
    """How the scores were obtained, under the results JSON's keys (``scales`` is ``tta_scales``)."""
    return {
        "split": split,
        "n_images": n_images,
        "n_pixels": n_pixels,
        "image_size": image_size,
        "scales": list(tta_scales),
        "flip": bool(flip),
        "crf": crf_settings,
        "seconds": round(elapsed, 3),
        "images_per_second": round(n_images / elapsed, 4) if elapsed > 0 else None,
    }


def score_entries(matrix, class_names):
    """The headline scores, the per-class IoU with names and the confusion matrix itself."""
    scores = matrix.scores()
    entries = {name: _json_number(scores[name]) for name in SCORE_NAMES}
    entries["n_classes_in_ground_truth"] = int((matrix.hist.sum(axis=1) > 0).sum())
    entries["class_iou"] = [
        {"id": i, "name": class_names[i], "iou": _json_number(scores["class_iou"][i])}
        for i in range(matrix.n_class)
    ]
    entries["confusion_matrix"] = matrix.hist.tolist()
    return entries


def check_scored(results, dataset_root, split):
    """Raise :class:`DatasetError` when the split had no labelled pixel (every score is null)."""
    if any(results[name] is None for name in SCORE_NAMES):
        raise DatasetError(f"{dataset_root}: split {split!r} has no labelled pixel to score")


def format_table(results):
    """The four headline scores, then per-class IoU with names ("-": class absent)."""
    lines = [f"{label:<24}{results[key] * 100:6.2f}%" for key, label in SCORE_LABELS.items()]
    lines.append("")
    lines.append(f"{'id':>4}  {'class':<24}{'IoU':>8}")
    for entry in results["class_iou"]:
        iou = "-" if entry["iou"] is None else f"{entry['iou'] * 100:7.2f}%"
        lines.append(f"{entry['id']:>4}  {entry['name']:<24}{iou:>8}")
    return "\n".join(lines)


def print_and_write(results, output_path, elapsed):
    """Print the score table and the throughput line, then write the JSON atomically."""
    n_images = results["n_images"]
    tqdm.write(format_table(results))
    tqdm.write(f"\n{n_images} images in {elapsed:.1f} s "
               f"({n_images / max(elapsed, 1e-9):.3f} images/s); results: {output_path}")
    write_json(results, output_path)
