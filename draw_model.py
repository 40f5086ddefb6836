#!/usr/bin/env python
"""Draw the model: a graph for TensorBoard and a layer-by-layer summary (see docs/demo.md).

    python draw_model.py [--config config/cocostuff.yaml] [--size 513]
    tensorboard --logdir runs        # the GRAPHS tab

The eval-mode model (multi-scale inputs fused by max) is traced on one
``size`` x ``size`` input and written to ``EXP.LOG_DIR/graph``. No weights are
needed: the structure does not depend on them.
"""

import sys
import warnings
from pathlib import Path

import click
import torch

from libs.models import build_model
from libs.models.resnet import ConvBnReLU
from libs.utils.config import ConfigError, load_config

GRAPH_SUBDIR = "graph"


def summary_layers(model):
    """``[(name, module)]`` of the layers to list: each conv-BN-ReLU unit, and every other leaf.

    A conv-BN-ReLU unit is one layer in the Caffe model, so it is one row here.
    """
    layers, inside_unit = [], ()
    for name, module in model.named_modules():
        if inside_unit and name.startswith(inside_unit):
            continue
        if isinstance(module, ConvBnReLU):
            layers.append((name, module))
            inside_unit = name + "."
        elif not any(True for _ in module.children()):
            layers.append((name, module))
    return layers


def layer_summary(model, image_size):
    """Rows ``(name, type, output shape, parameter count, calls)`` from one eval-mode forward.

    The output shape is that of the first call, i.e. the full-scale pass of
    MSC; the extra scales run the same layers again (``calls`` counts them).
    Also returns the model output's shape.
    """
    records = {}

    def hook(name):
        def record(module, inputs, output):
            if name in records:
                records[name]["calls"] += 1
            else:
                shape = tuple(output.shape) if torch.is_tensor(output) else None
                records[name] = {"shape": shape, "calls": 1}
        return record

    layers = summary_layers(model)
    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    try:
        with torch.inference_mode():
            output = model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name, module in layers:
        record = records.get(name, {"shape": None, "calls": 0})
        n_params = sum(p.numel() for p in module.parameters())
        rows.append((name, type(module).__name__, record["shape"], n_params, record["calls"]))
    return rows, tuple(output.shape)


def format_shape(shape):
    return "-" if shape is None else "x".join(str(s) for s in shape)


def format_summary(rows, output_shape, model, image_size):
    name_width = max(len(r[0]) for r in rows)
    type_width = max(len(r[1]) for r in rows)
    lines = [
        f"Layers at input 1x3x{image_size}x{image_size} (output shapes of the full-scale pass; "
        "'calls' > 1: also run on the extra MSC scales)",
        f"{'layer':<{name_width}}  {'type':<{type_width}}  {'output shape':>16}  "
        f"{'parameters':>11}  calls",
    ]
    for name, kind, shape, n_params, calls in rows:
        lines.append(f"{name:<{name_width}}  {kind:<{type_width}}  {format_shape(shape):>16}  "
                     f"{n_params:>11,}  {calls:>5}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"model output (fused logits): {format_shape(output_shape)}")
    lines.append(f"{len(rows)} layers, {total:,} parameters ({trainable:,} trainable; "
                 "BatchNorm is frozen)")
    return "\n".join(lines)


def write_graph(model, image_size, log_dir):
    """Trace the eval-mode model and write its graph to a TensorBoard event file in ``log_dir``."""
    from torch.utils.tensorboard import SummaryWriter

    with warnings.catch_warnings():
        # The tracer warns that shape arithmetic becomes constants: intended, the
        # graph is drawn for one input size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # add_graph is built on torch.jit.trace, which newer PyTorch marks deprecated;
        # nothing a user of this script can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        with SummaryWriter(str(log_dir)) as writer:
            writer.add_graph(model.eval(), torch.zeros(1, 3, image_size, image_size))
    return log_dir


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", default="config/cocostuff.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="YAML config of the model to draw.")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Side of the square input to trace  [default: IMAGE.SIZE.TEST]")
def main(config_path, size):
    """Write the model graph to TensorBoard (EXP.LOG_DIR/graph) and print a layer summary."""
    try:
        cfg = load_config(config_path)
        model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:  # e.g. an unknown MODEL.NAME
        raise click.ClickException(f"{config_path}: {e}") from None
    size = size or cfg.IMAGE.SIZE.TEST
    rows, output_shape = layer_summary(model, size)
    click.echo(format_summary(rows, output_shape, model, size))
    log_dir = write_graph(model, size, Path(cfg.EXP.LOG_DIR) / GRAPH_SUBDIR)
    click.echo(f"graph: {log_dir}  (view: tensorboard --logdir {cfg.EXP.LOG_DIR}, GRAPHS tab)")


if __name__ == "__main__":
    sys.exit(main())
