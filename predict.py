#!/usr/bin/env python
"""Segment many images: one label PNG per image, at the image's size (see docs/demo.md).

    python predict.py -c config/cocostuff.yaml -m cocostuff164k photos/ more/*.jpg -o labels/

Each output is ``<output dir>/<image stem>.png``, one channel of class indices (8-bit under 256
classes, else 16-bit); ``--overlay`` adds ``<stem>_overlay.png``, the labels' colours over the
image. Images of one size go through the network together (``--batch-size``).
"""

import sys

import click

from libs.cli import (command, config_option, cuda_option, load_cli_config, model_path_option,
                      one_line_errors, precision_option)


@command()
@config_option(help="YAML config, e.g. config/cocostuff.yaml.")
@model_path_option(required=False)
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None,
              help="Run this ONNX file (written by export.py) instead of --model-path.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the label PNGs (created if missing).")
@click.option("--crf/--no-crf", default=False, show_default=True,
              help="Refine with the dense CRF of the config's CRF section.")
@click.option("--overlay/--no-overlay", default=False, show_default=True,
              help="Also write <stem>_overlay.png: the label colours over the image.")
@click.option("--batch-size", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Images of one size per forward pass.")
@click.option("--overwrite/--no-overwrite", default=False, show_default=True,
              help="Replace label files an earlier run wrote (inputs are never replaced).")
@cuda_option()
@precision_option()
def main(config_path, model_path, onnx_path, inputs, output_dir, crf, overlay, batch_size,
         overwrite, cuda, precision):
    """Segment INPUTS (image files, folders, globs) into one label PNG each."""
    from pathlib import Path

    import cv2
    from tqdm import tqdm

    from libs.datasets.images import read_image_bgr
    from libs.inference.figure import save_label_png
    from libs.inference.image_files import collect_images, output_paths
    from libs.inference.segmenter import Segmenter
    from libs.utils.atomic import atomic_path
    from libs.utils.device import choose_device
    from libs.utils.visualize import colorize

    if (model_path is None) == (onnx_path is None):
        raise click.UsageError("give either --model-path or --onnx, not "
                               + ("both" if model_path else "neither"))
    with one_line_errors(config_path):
        images = collect_images(inputs, log=click.echo)
        outputs = output_paths(images, output_dir, overwrite, overlay)
        cfg = load_cli_config(config_path)
        segmenter = Segmenter.from_config(cfg, model_path, choose_device(cuda), crf, onnx_path,
                                          precision)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        n_classes = cfg.DATASET.N_CLASSES
        batch = []  # (image, its outputs) of one size

        def flush():
            for (image, (label_path, overlay_path)), labels in zip(
                    batch, segmenter.segment_batch([image for image, _ in batch])):
                save_label_png(labels, label_path, n_classes)
                if overlay_path is not None:
                    mixed = image // 2 + colorize(labels, n_classes)[:, :, ::-1] // 2
                    with atomic_path(overlay_path) as tmp:
                        cv2.imwrite(str(tmp), mixed)
            progress.update(len(batch))
            batch.clear()

        with tqdm(total=len(images), unit="image", desc="predict") as progress:
            for path, pair in zip(images, outputs):
                image = read_image_bgr(path, cfg.IMAGE.MEAN)
                if batch and (len(batch) == batch_size or batch[0][0].shape != image.shape):
                    flush()
                batch.append((image, pair))
            flush()
        click.echo(f"{len(images)} label maps in {output_dir}")


if __name__ == "__main__":
    sys.exit(main())
