#!/usr/bin/env python
"""Draw the model: a graph for TensorBoard and a layer-by-layer summary (see docs/demo.md).

    python draw_model.py [--config config/cocostuff.yaml] [--size 513]
    tensorboard --logdir runs        # the GRAPHS tab

The eval-mode model is traced on one ``size`` x ``size`` input and its graph (only) written to
``EXP.LOG_DIR/graph/EXP.ID``, one folder per config. No weights are needed: the structure does
not depend on them. The work is in ``libs/models/summary.py``.
"""

import sys
from pathlib import Path

import click

from libs.cli import command, config_option, load_cli_config, one_line_errors
from libs.models import build_model
from libs.models.summary import format_summary, layer_summary, write_graph
from libs.utils.atomic import check_writable_dir, write_error


@command()
@config_option(default="config/cocostuff.yaml", help="YAML config of the model to draw.")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Side of the square input to trace  [default: IMAGE.SIZE.TEST]")
def main(config_path, size):
    """Write the model graph to TensorBoard (EXP.LOG_DIR/graph/EXP.ID) and print a layer summary."""
    with one_line_errors(config_path):
        cfg = load_cli_config(config_path)
        log_dir = Path(cfg.EXP.LOG_DIR) / "graph" / cfg.EXP.ID
        check_writable_dir(log_dir, "the TensorBoard graph")  # before the tracing
        model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    size = size or cfg.IMAGE.SIZE.TEST
    rows, output_shape = layer_summary(model, size)
    click.echo(format_summary(rows, output_shape, model, size))
    with one_line_errors(config_path):
        try:
            write_graph(model, size, log_dir)
        except OSError as e:  # a disk that filled up since the check
            raise write_error(log_dir, e) from None
    click.echo(f"graph: {log_dir}  (view: tensorboard --logdir {cfg.EXP.LOG_DIR}, GRAPHS tab)")


if __name__ == "__main__":
    sys.exit(main())
