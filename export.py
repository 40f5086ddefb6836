#!/usr/bin/env python
"""Export a DeepLab model (v2, v3, v3+) to ONNX and check it against PyTorch.

    python export.py --config config/cocostuff.yaml --model-path PATH [--output model.onnx]
                     [--single-scale] [--check-sizes 353x289,257x193] [--force]

The model (MSC, or ``--single-scale``) is loaded as eval.py loads it and exported with dynamic
batch, height and width; at each ``--check-sizes`` size ONNX Runtime must give PyTorch's logits
within ``--rtol`` before the file takes its place. The work is in ``libs/models/export.py``;
``demo.py --onnx FILE`` runs the result.
"""

import sys
from pathlib import Path

import click
import torch

from libs.cli import command, config_option, load_cli_config, model_path_option, one_line_errors
from libs.inference.predict import load_model
from libs.models.export import default_onnx_path, export_onnx
from libs.utils.atomic import check_writable_output, refuse_overwriting_inputs
from libs.utils.errors import OutputError
from libs.utils.sizes import size_text


def parse_sizes(ctx, param, text):
    """``"353x289,257x193"`` (width x height, as every size here) -> ``[(289, 353), ...]``."""
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            width, height = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise click.BadParameter(f"expected WxH sizes such as 353x289, got {part!r}") from None
        if height < 1 or width < 1:
            raise click.BadParameter(f"sizes must be positive, got {part!r}")
        sizes.append((height, width))
    return sizes


def output_path(cfg, model_path, output, single_scale, force, config_path=None):
    """Where the file goes; never an input (weights, config), nor an existing file without
    ``--force``; its folder must take a file (checked now, not after the export)."""
    path = Path(output) if output else default_onnx_path(
        model_path, single_scale, released_dir=Path(cfg.EXP.OUTPUT_DIR) / "released")
    if Path(model_path).exists() and path.resolve() == Path(model_path).resolve():
        raise OutputError(f"{path}: is the model's weight file; choose another --output")
    refuse_overwriting_inputs(path, {"config file": config_path})
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists; pass --force to replace it")
    check_writable_output(path)
    return path


@command()
@config_option(help="YAML config of the model, e.g. config/cocostuff.yaml.")
@model_path_option()
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="ONNX file  [default: next to the model, <model stem>[_single].onnx; for a "
                   "released model's name, under EXP.OUTPUT_DIR/released/]")
@click.option("--single-scale", is_flag=True,
              help="Export the single-scale network (model.base) instead of the MSC.")
@click.option("--check-sizes", "sizes", default="353x289,257x193", show_default=True,
              callback=parse_sizes,
              help="Input sizes (WxH, comma-separated) at which ONNX Runtime must match "
                   "PyTorch; '' skips the check.")
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Largest allowed max|onnx - torch| / max|torch| of the logits.")
@click.option("--example-size", default="321x321", show_default=True, callback=parse_sizes,
              help="Input size traced (WxH); the exported sizes stay dynamic.")
@click.option("--opset", type=click.IntRange(min=7), default=None,
              help="ONNX opset  [default: the exporter's default in the installed torch]")
@click.option("--force", is_flag=True, help="Replace an existing --output.")
def main(config_path, model_path, output, single_scale, sizes, rtol, example_size, opset, force):
    """Export a model to ONNX (dynamic sizes) and check ONNX Runtime against PyTorch."""
    if len(example_size) != 1:
        raise click.BadParameter("expected one size", param_hint="--example-size")
    with one_line_errors(config_path):
        cfg = load_cli_config(config_path)
        path = output_path(cfg, model_path, output, single_scale, force, config_path)
        model = load_model(cfg, model_path, torch.device("cpu"))
        network = model.base if single_scale else model
        info = export_onnx(network, path, example_size=example_size[0], opset=opset,
                           check_sizes=sizes, rtol=rtol)
    kind = "single-scale" if single_scale else f"MSC ({model.geometry} geometry)"
    click.echo(f"{path}: {kind}, {info.n_bytes / 2 ** 20:.1f} MiB, opset {info.opset}, "
               f"{info.exporter} exporter, {info.n_folded} BatchNorms folded, exported in "
               f"{info.seconds:.1f} s; onnx.checker: ok")
    for (height, width), error in info.errors.items():
        click.echo(f"ONNX Runtime vs PyTorch at {size_text(height, width)}: "
                   f"max relative error {error:.1e} (tolerance {rtol:.0e})")


if __name__ == "__main__":
    sys.exit(main())
