"""Every script and command answers -h and --help with its usage (and never runs)."""

import pytest
from click.testing import CliRunner

import convert
import demo
import draw_model
import eval as eval_script
import export
import predict
import train
import uvcdemo
from libs.cli import check, sbd, synthetic

COMMANDS = {"convert.py": convert, "train.py": train, "eval.py": eval_script, "demo.py": demo,
            "uvcdemo.py": uvcdemo, "export.py": export, "draw_model.py": draw_model,
            "predict.py": predict,
            "libs.cli.check": check, "libs.cli.sbd": sbd, "libs.cli.synthetic": synthetic}


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help(name, flag):
    result = CliRunner().invoke(COMMANDS[name].main, [flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ") and "Options:" in result.output
    if name not in ("convert.py", "libs.cli.sbd", "libs.cli.synthetic"):
        assert "--set KEY=VALUE" in result.output  # every config-reading command takes --set
