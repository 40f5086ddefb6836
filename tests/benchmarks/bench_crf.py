"""Dense-CRF speed: label pruning and parallel workers, on realistic probability maps.

    python -m tests.benchmarks.bench_crf                  # 513x513, 182 classes
    python -m tests.benchmarks.bench_crf --size 257 --n-images 4

Run it from the repository root. The CRF parameters are those of the
config's ``CRF`` section (``--config``, default config/cocostuff.yaml: DeepLab
v2's); its ``PRUNE_THRESHOLD`` is replaced by each threshold compared.

No trained COCO-Stuff model is available here, so the probability maps come
from :func:`realistic_sample`, which imitates what DeepLab v2 produces on a
COCO-Stuff test image:

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

Statistics printed per run (mean top-1 probability, fraction of uncertain
pixels, labels above the threshold, accuracy against the region truth) let the
reader judge how close the maps are to a trained network's softmax.
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

from libs.inference.crf import DenseCRF, default_n_jobs, map_crf
from libs.utils.config import load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "cocostuff.yaml"
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


@click.command()
@click.option("--config", "config_path", default=str(DEFAULT_CONFIG), show_default=True,
              help="YAML config whose CRF section gives the CRF parameters.")
@click.option("--size", default=513, show_default=True, help="Image side (COCO-Stuff test: 513).")
@click.option("--n-classes", default=182, show_default=True)
@click.option("--n-images", default=6, show_default=True)
@click.option("--thresholds", default="0.01,0.05,0.1", show_default=True,
              help="Comma-separated prune thresholds to compare with the full CRF.")
@click.option("--parallel/--no-parallel", default=True, show_default=True,
              help="Also time map_crf with 1 worker vs all cores.")
@click.option("--parallel-threshold", default=0.05, show_default=True, type=float,
              help="Prune threshold of the CRF timed in parallel (negative: full CRF).")
@click.option("--seed", default=0, show_default=True)
def main(config_path, size, n_classes, n_images, thresholds, parallel, parallel_threshold,
         seed):
    """Time the full and the label-pruned CRF and measure their pixel agreement."""
    thresholds = [float(t) for t in thresholds.split(",")]
    rng = np.random.default_rng(seed)
    samples = [realistic_sample(rng, n_classes, size) for _ in range(n_images)]
    full = DenseCRF.from_config(load_config(config_path).CRF).with_prune_threshold(None)
    pruned = {t: full.with_prune_threshold(t) for t in thresholds}

    total_full = [0.0, 0.0]  # CPU seconds, wall seconds
    total_pruned = {t: [0.0, 0.0] for t in thresholds}
    agree = {t: 0 for t in thresholds}
    n_pixels = 0
    print(f"{n_images} images {size}x{size}, {n_classes} classes")

    def timed(crf, image, prob):
        cpu, wall = time.process_time(), time.perf_counter()
        labels = crf.predict(image, prob)  # what eval.py computes (via map_crf)
        return labels, time.process_time() - cpu, time.perf_counter() - wall

    for i, (image, prob, truth) in enumerate(samples):
        stats = describe(prob, truth, thresholds[0])
        reference, cpu, wall = timed(full, image, prob)
        total_full[0] += cpu
        total_full[1] += wall
        n_pixels += reference.size
        line = (f"image {i}: top1 {stats['mean_top1']:.3f}, <0.5: {stats['uncertain']:.1%}, "
                f"acc {stats['accuracy']:.1%}, CRF changes {(reference != prob.argmax(0)).mean():.1%}"
                f" | full {cpu:.1f}s cpu")
        for t in thresholds:
            labels, cpu, wall = timed(pruned[t], image, prob)
            total_pruned[t][0] += cpu
            total_pruned[t][1] += wall
            agree[t] += int((labels == reference).sum())
            kept = len(pruned[t].kept_labels(prob))
            line += f" | t={t:g}: {kept} labels {cpu:.2f}s"
        print(line, flush=True)

    print(f"full CRF: {total_full[0] / n_images:.2f} s/image CPU ({total_full[1] / n_images:.2f} wall)")
    for t in thresholds:
        cpu, wall = total_pruned[t]
        print(f"pruned t={t:g}: {cpu / n_images:.2f} s/image CPU, "
              f"speed-up {total_full[0] / cpu:.1f}x CPU ({total_full[1] / wall:.1f}x wall), "
              f"pixel agreement {agree[t] / n_pixels:.5%}", flush=True)

    if parallel:
        crf = full if parallel_threshold < 0 else full.with_prune_threshold(parallel_threshold)
        items = [(i, image, prob) for i, (image, prob, _) in enumerate(samples)]
        timings = {}
        for n_jobs in (1, None):  # wall clock: CPU time cannot show parallelism
            start = time.perf_counter()
            results = [r for _, r in map_crf(crf, items, n_jobs=n_jobs, argmax=True)]
            timings[n_jobs] = time.perf_counter() - start
        print(f"map_crf ({crf}): 1 worker {timings[1]:.1f}s, "
              f"{default_n_jobs()} workers {timings[None]:.1f}s, "
              f"speed-up {timings[1] / timings[None]:.2f}x")
        del results


if __name__ == "__main__":
    main()
