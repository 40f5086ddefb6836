"""The command-line layer, the only part of ``libs`` that knows about click: the options every
script shares and one error-to-message rule. The top-level scripts declare their options, wire
library calls together inside :func:`one_line_errors`, and report; every
:class:`~libs.utils.errors.DeepLabError` becomes one line (exit status 1), not a traceback.
"""

import contextlib
import functools
import math
import re

import click

from ..utils.atomic import TORCH_FILE_ERRORS
from ..utils.config import load_config
from ..utils.errors import ConfigError, DeepLabError, first_line

OVERRIDES_KEY = "deeplab.config_overrides"  # where --set values wait in the click context
# torch re-raises an error of a DataLoader worker as the same type with this text before
# the worker's traceback, whose last line is "<module>.<Type>: <the original message>".
WORKER_PREAMBLE = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")


# ``click.command`` with ``-h`` as well as ``--help``.
command = functools.partial(click.command, context_settings={"help_option_names": ["-h", "--help"]})


def config_option(default=None, help="YAML config, e.g. config/cocostuff.yaml or config/toy.yaml."):
    """``-c/--config`` (the YAML file that holds every default) and ``--set KEY=VALUE``, whose
    values wait in the click context for :func:`load_cli_config`."""
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
    overrides = click.get_current_context().meta.get(OVERRIDES_KEY, ())
    return load_config(config_path, overrides=overrides)


def model_path_option(required=True):
    """``-m/--model-path``: weights to load: a file in any understood format, or a zoo name."""
    return click.option("-m", "--model-path", required=required, default=None,
                        type=click.Path(dir_okay=False),
                        help="Weights: a converted Caffe model, a train.py checkpoint, a "
                             "released deeplab-pytorch .pth, or a released model's name "
                             "(cocostuff10k, cocostuff164k, voc12; downloaded once)."
                             + ("" if required else " Required unless --onnx."))


# ``--precision``: the inference precision (``prepare_for_inference``).
precision_option = functools.partial(
    click.option, "--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
    show_default=True, help="Inference precision: fp32 (the benchmark numbers), bf16 (CUDA, or a "
                            "CPU with AMX/AVX512-BF16), fp16 (CUDA).")


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


def original_message(error):
    """``str(error)``, or for an error re-raised from a DataLoader worker, the worker's own message:
    "images/3.jpg: corrupt image", not "Caught DatasetError in DataLoader worker process 0" and
    twenty lines of the worker's traceback."""
    text = str(error)
    if not WORKER_PREAMBLE.match(text):
        return text
    kind = type(error)
    for name in (f"{kind.__module__}.{kind.__qualname__}", kind.__qualname__):
        at = text.rfind(f"\n{name}: ")
        if at >= 0:
            return first_line(text[at + len(name) + 3:])
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].split(": ", 1)[-1].strip()


@contextlib.contextmanager
def one_line_errors(config_path=None):
    """Turn the project's errors raised inside the block into one-line click errors. A
    :class:`ConfigError` about a value of the loaded config (``loaded``) names the key, so its
    line starts with ``config_path``; a torch serialisation error that escapes
    ``libs.models.weights.load_file`` is one line too."""
    try:
        yield
    except DeepLabError as e:
        loaded = config_path and isinstance(e, ConfigError) and e.loaded
        prefix = f"{config_path}: " if loaded else ""
        raise click.ClickException(prefix + original_message(e)) from None
    except RuntimeError as e:
        if not any(mark in str(e) for mark in TORCH_FILE_ERRORS):
            raise
        raise click.ClickException(f"a weight file torch cannot read or write: "
                                   f"{first_line(original_message(e), 200)}") from None
