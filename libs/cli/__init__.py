"""The command-line layer: the options every script shares and one error-to-message rule.

This package is the only part of ``libs`` that knows about click. The scripts
at the top level are thin faces: they declare their options (the shared ones
from here), wire library calls together inside :func:`one_line_errors`, and
report. Every error the project raises for bad input derives from
:class:`~libs.utils.errors.DeepLabError` and becomes one line on the terminal
(exit status 1) instead of a traceback.
"""

import contextlib
import math

import click

from ..utils.config import ConfigValueError, load_config
from ..utils.errors import DeepLabError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
OVERRIDES_KEY = "deeplab.config_overrides"  # where --set values wait in the click context


def command(**kwargs):
    """``click.command`` with ``-h`` as well as ``--help``."""
    return click.command(context_settings=CONTEXT_SETTINGS, **kwargs)


def config_option(default=None, help="YAML config, e.g. config/cocostuff.yaml or config/toy.yaml."):
    """``-c/--config`` (the YAML file that holds every default) and ``--set KEY=VALUE``.

    The overrides are kept in the click context; :func:`load_cli_config` applies them.
    """
    config = click.option("-c", "--config", "config_path", required=default is None,
                          default=default, show_default=default is not None,
                          type=click.Path(dir_okay=False), help=help)

    def remember(ctx, param, values):
        ctx.meta[OVERRIDES_KEY] = tuple(values)

    overrides = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                             expose_value=False, callback=remember,
                             help="Override a config value, e.g. --set SOLVER.ITER_MAX=1000 "
                                  "(a YAML value; repeatable; checked like the file).")
    return lambda function: config(overrides(function))


def load_cli_config(config_path):
    """The config at ``config_path`` with this command's ``--set`` overrides applied."""
    ctx = click.get_current_context(silent=True)
    overrides = ctx.meta.get(OVERRIDES_KEY, ()) if ctx is not None else ()
    return load_config(config_path, overrides=overrides)


def model_path_option(required=True):
    """``-m/--model-path``: weights to load: a file in any understood format, or a zoo name."""
    return click.option("-m", "--model-path", required=required, default=None,
                        type=click.Path(dir_okay=False),
                        help="Weights: a converted Caffe model, a train.py checkpoint, a "
                             "released deeplab-pytorch .pth, or a released model's name "
                             "(cocostuff10k, cocostuff164k, voc12; downloaded once)."
                             + ("" if required else " Required unless --onnx."))


def precision_option():
    """``--precision``: the inference precision (``prepare_for_inference``); default fp32."""
    return click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
                        default="fp32", show_default=True,
                        help="Inference precision: fp32 (the benchmark numbers), bf16 (CUDA, "
                             "or a CPU with AMX/AVX512-BF16), fp16 (CUDA).")


def cuda_option(what="Run the model on the GPU"):
    """``--cuda/--no-cuda``; ``None`` (neither given) means "when CUDA is available"."""
    return click.option("--cuda/--no-cuda", default=None,
                        help=f"{what}  [default: when CUDA is available]")


def parse_positive_floats(text):
    """``"0.75,1.0,1.25"`` -> ``(0.75, 1.0, 1.25)``; a click error names the bad part."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise click.BadParameter(f"expected positive numbers, got {text!r}")
    return values


@contextlib.contextmanager
def one_line_errors(config_path=None):
    """Turn the project's errors raised inside the block into one-line click errors.

    A :class:`ConfigValueError` (an unknown ``MODEL.NAME``, an out-of-range CRF
    threshold) comes from a value of the config file, so its line is prefixed
    with ``config_path`` when one is given.
    """
    try:
        yield
    except ConfigValueError as e:
        prefix = f"{config_path}: " if config_path is not None else ""
        raise click.ClickException(f"{prefix}{e}") from None
    except DeepLabError as e:
        raise click.ClickException(str(e)) from None
