#!/usr/bin/env python
"""Segment one image and draw the result at its own resolution (see docs/demo.md).

    python demo.py --config config/cocostuff.yaml --model-path PATH --image-path IMAGE [--crf]
    python demo.py --config config/cocostuff.yaml --onnx model.onnx --image-path IMAGE

With ``--onnx`` ONNX Runtime runs an export.py file instead of PyTorch; all else is the same.
The figure (``libs/inference/figure.py``) is saved, and shown when a display exists.
"""

import sys
from pathlib import Path

import click
import matplotlib

from libs.cli import (command, config_option, cuda_option, load_cli_config, model_path_option,
                      one_line_errors, precision_option)
from libs.datasets import load_checked_class_names
from libs.datasets.images import read_image_bgr
from libs.inference.figure import (FIGURE_DPI, MIN_SHARE, TOP_K, build_figure, check_label_path,
                                   class_shares, default_output_path, format_shares,
                                   panel_classes, refuse_overwrite, save_label_png)
from libs.inference.segmenter import Segmenter
from libs.utils.atomic import (check_writable_output, figure_format, refuse_overwriting_inputs,
                               same_file, save_figure)
from libs.utils.device import choose_device
from libs.utils.errors import OutputError
from libs.utils.sizes import size_text
from libs.utils.visualize import display_available


def check_outputs(output, label_path, image_path, inputs):
    """One line for an output the run could not write: a bad format, one of the inputs (the
    image, or ``inputs``: ``{what: path}``), or a folder that cannot take a file."""
    figure_format(output)
    refuse_overwrite(output, image_path, "--output")
    refuse_overwriting_inputs(output, inputs, "--output")
    if label_path is not None:
        check_label_path(label_path)
        refuse_overwrite(label_path, image_path, "--save-label")
        refuse_overwriting_inputs(label_path, inputs, "--save-label")
        if same_file(label_path, output):
            raise OutputError(f"{label_path}: --save-label and --output name the same file")
        check_writable_output(label_path)
    check_writable_output(output)


@command()
@config_option(help="YAML config, e.g. config/cocostuff.yaml.")
@model_path_option(required=False)
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None,
              help="Run this ONNX file (written by export.py) with ONNX Runtime instead of "
                   "--model-path.")
@click.option("-i", "--image-path", "image_paths", required=True, multiple=True,
              type=click.Path(dir_okay=False),
              help="Image to segment (any format OpenCV reads); for many, use predict.py.")
@click.option("--crf/--no-crf", default=False, show_default=True,
              help="Refine with the dense CRF of the config's CRF section.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Figure file (.png, .pdf, .svg, ...)  "
                   "[default: ./<image stem>_segmentation.png, in the current directory]")
@click.option("--save-label", "label_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the label map here, at the image's size: a one-channel PNG of class "
                   "indices (8-bit under 256 classes, else 16-bit).")
@click.option("--top-k", type=click.IntRange(min=0), default=TOP_K, show_default=True,
              help="Draw a mask panel for at most this many classes, the largest first.")
@click.option("--min-share", type=click.FloatRange(0, 100), default=MIN_SHARE * 100,
              show_default=True,
              help="Percent of the pixels a class needs for a panel (smaller classes are "
                   "still printed and in the legend).")
@cuda_option()
@precision_option()
@click.option("--show/--no-show", default=None,
              help="Also open the figure in a window  [default: when a display exists]")
def main(config_path, model_path, onnx_path, image_paths, crf, output, label_path, top_k,
         min_share, cuda, precision, show):
    """Segment one image: print the classes found and save (and show) a figure."""
    if len(image_paths) > 1:
        raise click.UsageError(f"--image-path given {len(image_paths)} times: demo.py segments "
                               "one image; predict.py takes many (files, folders, globs)")
    image_path = image_paths[0]
    if (model_path is None) == (onnx_path is None):
        raise click.UsageError("give either --model-path (PyTorch weights) or --onnx "
                               "(an export.py file), not " + ("both" if model_path else "neither"))
    if onnx_path is not None and precision != "fp32":
        raise click.UsageError("--precision applies to --model-path; an ONNX model runs in fp32")
    if show and not display_available():
        raise click.ClickException("--show: no display available (DISPLAY is not set); "
                                   "use --no-show, the figure is saved to --output")
    show = display_available() if show is None else show
    output = Path(output) if output else default_output_path(image_path)
    with one_line_errors(config_path):
        check_outputs(output, label_path, image_path,  # before the slow part
                      {"model file": model_path, "ONNX file": onnx_path,
                       "config file": config_path})
        cfg = load_cli_config(config_path)
        class_names = load_checked_class_names(cfg)
        image_bgr = read_image_bgr(image_path, cfg.IMAGE.MEAN)
        segmenter = Segmenter.from_config(cfg, model_path, choose_device(cuda), crf, onnx_path,
                                          precision)
        label_map = segmenter(image_bgr)
        shares = class_shares(label_map, cfg.DATASET.N_CLASSES)
        click.echo(f"{image_path} ({size_text(*label_map.shape)}{', CRF' if crf else ''}): "
                   f"{len(shares)} classes found (id, name, share of pixels)")
        click.echo(format_shares(shares, class_names))
        figure = None  # build_figure makes a bare one, which needs no display
        if show:
            import matplotlib.pyplot as plt  # only now: importing pyplot picks a GUI backend

            figure = plt.figure()
        figure = build_figure(image_bgr[:, :, ::-1], label_map, class_names, shares, figure,
                              panel_classes(shares, top_k, min_share / 100))
        save_figure(figure, output, FIGURE_DPI)
        click.echo(f"figure: {output}")
        if label_path is not None:
            save_label_png(label_map, label_path, cfg.DATASET.N_CLASSES)
            click.echo(f"label map: {label_path}")
    if show:
        plt.show()


if __name__ == "__main__":
    if not display_available():
        matplotlib.use("Agg")
    sys.exit(main())
