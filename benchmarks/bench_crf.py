"""Exact vs label-pruned dense CRF: agreement, mean IoU and speed, in one run.

    python -m benchmarks.bench_crf                  # synthetic maps: 513x513, 182 classes
    python -m benchmarks.bench_crf --size 257 --n-images 4
    python -m benchmarks.bench_crf --config config/toy.yaml \
        --model-path data/models/toy/checkpoint_final.pth        # a trained model's real outputs

Run it from the repository root. The CRF parameters are those of the
config's ``CRF`` section (``--config``, default config/cocostuff.yaml: DeepLab
v2's); its ``PRUNE_THRESHOLD`` is ignored: the exact CRF (all labels) is the
reference, and each threshold of ``--thresholds`` is compared with it on the
same images. The table at the end gives, per threshold, the labels kept, the
CPU time per image and its ratio to the exact CRF's, the share of pixels
labelled as the exact CRF labels them, and the mean IoU against the ground
truth next to the exact CRF's (and the plain argmax's).

**With ``--model-path``** the maps are a trained model's real outputs: the
model of ``--config`` runs on the first ``--n-images`` test images
(``build_dataset(cfg, "test", augment=False)``, ``predict_probs`` at the
label's size, exactly as eval.py without test-time augmentation), and the CRF
sees :func:`crf_image`'s picture; the ground truth is the dataset's label
(ignore label left out of the mean IoU, not of the pixel agreement).

**Without it** no trained COCO-Stuff model is needed: the probability maps
come from :func:`realistic_sample`, which imitates what DeepLab v2 produces on
a COCO-Stuff test image, with 182 classes at 513x513:

* the scene is a partition into 3-8 regions with smooth curved boundaries
  (argmax of smooth random fields), each region one of the 182 classes;
* the RGB image paints each region with its own colour plus smooth shading,
  pixel noise and a slight blur, so the CRF has real colour edges to snap to;
* the logits are made at 1/8 resolution, as the network's are: the region
  fractions of each 8x8 cell times a per-image margin, plus smooth noise for
  every class (the "other" 170+ classes sit a margin below the winners), plus
  2-4 "confuser" classes that win or nearly win in blobs, as a trained net
  confuses grass with playingfield; they are then upsampled bilinearly to full
  size and passed through a softmax, exactly as eval.py does.

Statistics printed per synthetic image (mean top-1 probability, fraction of uncertain
pixels, labels above the threshold, accuracy against the region truth) let the
reader judge how close the maps are to a trained network's softmax; the mean
IoU of this mode is against the region truth.

Timings of both sides of every ratio are taken in the same process. The CRF
is single-threaded, so the label-pruning speed-up is the ratio of process CPU
times, which other programs on a busy machine barely disturb (wall-clock
ratios are printed too). The parallel speed-up is necessarily a wall-clock
ratio, so run it on an otherwise idle machine.
"""

import time
from pathlib import Path

import click
import cv2
import numpy as np
import torch

from libs.datasets import build_dataset
from libs.inference.crf import DenseCRF, default_n_jobs, map_crf
from libs.inference.metric import ConfusionMatrix
from libs.inference.predict import crf_image, load_model, predict_probs
from libs.utils.config import load_config
from libs.utils.device import choose_device


def crf_predict(crf, image, probmap):
    """The HxW label map after ``crf``: ``crf(image, probmap).argmax(0)``, via :func:`map_crf`."""
    return next(map_crf(crf, [(None, image, probmap)], n_jobs=1, argmax=True))[1]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "cocostuff.yaml"
OUTPUT_STRIDE = 8
REGION_STRENGTH = 4.0  # logit lead of a region's class inside it over the other present ones


def _smooth_fields(rng, n, grid, size):
    """``n`` random fields that vary on the scale of size/grid, resized to size x size."""
    low = rng.normal(size=(n, grid, grid)).astype(np.float32)
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in low])


def realistic_sample(rng, n_classes=182, size=513):
    """One (RGB uint8 image, CxHxW float32 probability map, HxW truth) triple; see module doc."""
    n_regions = int(rng.integers(3, 9))
    region_classes = rng.choice(n_classes, n_regions, replace=False)
    # Scene partition; random per-region offsets make region sizes unequal.
    fields = _smooth_fields(rng, n_regions, int(rng.integers(3, 7)), size)
    fields += rng.normal(scale=0.5, size=(n_regions, 1, 1)).astype(np.float32)
    region = fields.argmax(axis=0)
    truth = region_classes[region]

    colours = rng.integers(20, 236, size=(n_regions, 3)).astype(np.float32)
    shading = _smooth_fields(rng, 1, 4, size)[0] * 12.0
    image = colours[region] + shading[..., None]
    image += rng.normal(scale=6.0, size=image.shape)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)
    image = np.clip(image, 0, 255).astype(np.uint8)

    # Logits at 1/8 resolution, like the network's output.
    low = (size - 1) // OUTPUT_STRIDE + 1
    fractions = np.stack([
        cv2.resize((region == r).astype(np.float32), (low, low), interpolation=cv2.INTER_AREA)
        for r in range(n_regions)
    ])
    def smooth_noise(n):
        fields = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0)
                           for f in rng.normal(size=(n, low, low)).astype(np.float32)])
        return fields / fields.std()

    # Present classes: high inside their region, a few nats lower elsewhere.
    present = region_classes.tolist()
    scores = [REGION_STRENGTH * fractions[r] for r in range(n_regions)]
    # Confusers win or nearly win in blobs of a region (grass vs playingfield).
    for target in rng.choice(n_regions, int(rng.integers(2, 7))):
        blob = np.clip(_smooth_fields(rng, 1, 3, low)[0] + 0.5, 0, None)
        present.append(int(rng.integers(n_classes)))
        scores.append(REGION_STRENGTH * fractions[target] * blob)
    scores = np.stack(scores) + 0.5 * smooth_noise(len(present))
    top = scores.max(axis=0)
    # All other classes trail the local winner by `gap` nats (per image: how
    # peaked the softmax is), shifted per class and varying smoothly in space.
    gap = rng.uniform(8.0, 12.0)
    class_offset = rng.normal(scale=1.5, size=(n_classes, 1, 1)).astype(np.float32)
    logits = top - gap + class_offset + smooth_noise(n_classes)
    for c, score in zip(present, scores):
        logits[c] = np.maximum(logits[c], score)
    logits = np.stack([cv2.resize(l, (size, size), interpolation=cv2.INTER_LINEAR) for l in logits])
    logits -= logits.max(axis=0, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=0, keepdims=True)
    return image, prob.astype(np.float32), truth


def describe(prob, truth, threshold):
    top1 = prob.max(axis=0)
    peak = prob.reshape(prob.shape[0], -1).max(axis=1)
    return dict(
        mean_top1=float(top1.mean()),
        uncertain=float((top1 < 0.5).mean()),
        accuracy=float((prob.argmax(axis=0) == truth).mean()),
        kept=int((peak > threshold).sum()),
    )


def timed_predict(crf, image, prob):
    """The CRF's label map (what eval.py computes, via map_crf), CPU and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    labels = crf_predict(crf, image, prob)
    return labels, time.process_time() - cpu, time.perf_counter() - wall


class Comparison:
    """The exact CRF and each pruned one on the same images: running totals and the table.

    Every image goes through the exact CRF first, then through each pruned
    CRF in turn, so drifts of the machine's speed hit all of them alike.
    """

    def __init__(self, exact, thresholds, n_classes):
        self.exact = exact.with_prune_threshold(None)
        self.pruned = {t: self.exact.with_prune_threshold(t) for t in thresholds}
        keys = ["argmax", None] + list(thresholds)
        self.matrices = {k: ConfusionMatrix(n_classes) for k in keys}
        self.same = dict.fromkeys(keys, 0)  # pixels labelled as the exact CRF labels them
        self.cpu = dict.fromkeys(keys[1:], 0.0)
        self.wall = dict.fromkeys(keys[1:], 0.0)
        self.kept = {t: [] for t in thresholds}
        self.n_pixels = 0
        self.n_images = 0

    def add(self, image, prob, truth):
        """Run every CRF on one image; return a one-line summary of it."""
        reference, cpu, wall = timed_predict(self.exact, image, prob)
        argmax = prob.argmax(axis=0)
        self._count(None, reference, reference, truth, cpu, wall)
        self._count("argmax", argmax, reference, truth)
        self.n_pixels += reference.size
        self.n_images += 1
        line = f"CRF changes {(reference != argmax).mean():.2%} | exact {cpu:.2f}s cpu"
        for t, crf in self.pruned.items():
            labels, cpu, wall = timed_predict(crf, image, prob)
            self._count(t, labels, reference, truth, cpu, wall)
            self.kept[t].append(len(crf.kept_labels(prob)))
            line += f" | t={t:g}: {self.kept[t][-1]} labels {cpu:.2f}s"
        return line

    def _count(self, key, labels, reference, truth, cpu=0.0, wall=0.0):
        self.matrices[key].update(truth, labels)
        self.same[key] += int((labels == reference).sum())
        if key != "argmax":
            self.cpu[key] += cpu
            self.wall[key] += wall

    def table(self):
        """A Markdown table: one row for the plain argmax, the exact CRF and each threshold."""
        exact_miou = self.matrices[None].scores()["mean_iou"]
        lines = ["| CRF | labels kept (mean, range) | CPU s/image | time vs exact "
                 "| same label as exact | differing pixels | mean IoU | mIoU vs exact (points) |",
                 "|---|---|---|---|---|---|---|---|"]
        for key in self.matrices:
            miou = self.matrices[key].scores()["mean_iou"]
            if key == "argmax":
                name, kept, seconds, ratio = "none (argmax)", "-", "-", "-"
            else:
                name = "exact (all labels)" if key is None else f"pruned at {key:g}"
                kept = (f"{self.matrices[key].n_class}" if key is None else
                        f"{np.mean(self.kept[key]):.1f} ({min(self.kept[key])}-{max(self.kept[key])})")
                seconds = f"{self.cpu[key] / self.n_images:.3f}"
                ratio = f"{self.cpu[key] / self.cpu[None]:.2f} ({self.wall[key] / self.wall[None]:.2f} wall)"
            lines.append(f"| {name} | {kept} | {seconds} | {ratio} "
                         f"| {self.same[key] / self.n_pixels:.4%} | {self.n_pixels - self.same[key]} "
                         f"| {miou:.2%} | {(miou - exact_miou) * 100:+.3f} |")
        return "\n".join(lines)


def model_samples(cfg, model_path, n_images):
    """``(image id, CRF picture, probabilities, label)`` of a trained model on the test split."""
    device = choose_device(None)
    model = load_model(cfg, model_path, device)
    dataset = build_dataset(cfg, "test", augment=False)
    for index in range(min(n_images or len(dataset), len(dataset))):
        image_id, image, label = dataset[index]
        with torch.inference_mode():
            probs = predict_probs(model, image[None].to(device), tuple(label.shape[-2:]))
        rgb = crf_image(image, cfg.IMAGE.MEAN, cfg.CRF.LEGACY_MEAN_SUBTRACTED_IMAGE)
        yield image_id, rgb, probs[0].float().cpu().numpy(), np.asarray(label)


def report(comparison, rows, footer):
    """Add each ``(name, picture, probabilities, truth, note)`` row, print it, then the table."""
    for name, picture, prob, truth, note in rows:
        print(f"{name}: {note}, {comparison.add(picture, prob, truth)}", flush=True)
    print(f"\n{comparison.n_images} images, {comparison.n_pixels} pixels; time: CPU seconds "
          f"of DenseCRF.predict on one core{footer}\n")
    print(comparison.table())


def run_model(cfg, model_path, n_images, thresholds):
    """Pruning against the exact CRF on a trained model's outputs; print per image, then the table."""
    comparison = Comparison(DenseCRF.from_config(cfg.CRF), thresholds, cfg.DATASET.N_CLASSES)
    print(f"{model_path}: {cfg.DATASET.N_CLASSES} classes, test images of "
          f"{cfg.DATASET.ROOT}, {comparison.exact}")
    rows = ((f"{image_id} {prob.shape[1]}x{prob.shape[2]}", rgb, prob, label,
             f"top1 {prob.max(axis=0).mean():.3f}")
            for image_id, rgb, prob, label in model_samples(cfg, model_path, n_images))
    report(comparison, rows, "")


def run_synthetic(cfg, size, n_classes, n_images, thresholds, seed):
    """Pruning against the exact CRF on :func:`realistic_sample` maps; return the samples."""
    rng = np.random.default_rng(seed)
    samples = [realistic_sample(rng, n_classes, size) for _ in range(n_images)]
    comparison = Comparison(DenseCRF.from_config(cfg.CRF), thresholds, n_classes)
    print(f"{n_images} synthetic images {size}x{size}, {n_classes} classes, {comparison.exact}")

    def rows():
        for i, (image, prob, truth) in enumerate(samples):
            stats = describe(prob, truth, thresholds[0])
            yield (f"image {i}", image, prob, truth,
                   f"top1 {stats['mean_top1']:.3f}, <0.5: {stats['uncertain']:.1%}, "
                   f"acc {stats['accuracy']:.1%}")

    report(comparison, rows(), "; mean IoU against the region truth")
    return samples


def time_parallel(crf, samples):
    """Wall-clock time of map_crf over the samples with 1 worker and with all cores."""
    items = [(i, image, prob) for i, (image, prob, _) in enumerate(samples)]
    timings = {}
    for n_jobs in (1, None):  # wall clock: CPU time cannot show parallelism
        start = time.perf_counter()
        for _ in map_crf(crf, items, n_jobs=n_jobs, argmax=True):
            pass
        timings[n_jobs] = time.perf_counter() - start
    print(f"\nmap_crf ({crf}): 1 worker {timings[1]:.1f}s, "
          f"{default_n_jobs()} workers {timings[None]:.1f}s, "
          f"speed-up {timings[1] / timings[None]:.2f}x")


@click.command()
@click.option("--config", "config_path", default=str(DEFAULT_CONFIG), show_default=True,
              help="YAML config: the CRF section, and with --model-path the model and dataset.")
@click.option("--model-path", default=None,
              help="Weights of a model of --config: compare on its outputs on the test split "
                   "instead of on synthetic maps.")
@click.option("--size", default=513, show_default=True,
              help="Synthetic image side (COCO-Stuff test: 513).")
@click.option("--n-classes", default=182, show_default=True, help="Synthetic maps' classes.")
@click.option("--n-images", default=None, type=click.IntRange(min=1),
              help="Images to compare on  [default: 6 synthetic, or every test image]")
@click.option("--thresholds", default="0.01,0.02,0.05,0.1,0.2", show_default=True,
              help="Comma-separated prune thresholds to compare with the exact CRF.")
@click.option("--parallel/--no-parallel", default=True, show_default=True,
              help="Synthetic mode: also time map_crf with 1 worker vs all cores.")
@click.option("--parallel-threshold", default=0.05, show_default=True, type=float,
              help="Prune threshold of the CRF timed in parallel (negative: exact CRF).")
@click.option("--seed", default=0, show_default=True, help="Synthetic maps' seed.")
def main(config_path, model_path, size, n_classes, n_images, thresholds, parallel,
         parallel_threshold, seed):
    """Compare the label-pruned CRF with the exact one: agreement, mean IoU, time."""
    thresholds = [float(t) for t in thresholds.split(",")]
    cfg = load_config(config_path)
    if model_path is not None:
        run_model(cfg, model_path, n_images, thresholds)
        return
    samples = run_synthetic(cfg, size, n_classes, n_images or 6, thresholds, seed)
    if parallel:
        exact = DenseCRF.from_config(cfg.CRF).with_prune_threshold(None)
        crf = exact if parallel_threshold < 0 else exact.with_prune_threshold(parallel_threshold)
        time_parallel(crf, samples)


if __name__ == "__main__":
    main()
