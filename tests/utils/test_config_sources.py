"""Derived configs (_BASE_) and command-line overrides (--set), checked by the same schema."""

import pytest
import yaml
from click.testing import CliRunner

from libs.cli import check as check_cli
from libs.utils.config import load_config
from libs.utils.errors import ConfigError


def write(path, mapping):
    path.write_text(yaml.safe_dump(mapping))
    return path


@pytest.fixture
def base_file(tmp_path):
    """A complete config (config/cocostuff.yaml's values) in a temporary folder."""
    return write(tmp_path / "base.yaml", load_config("config/cocostuff.yaml").to_dict())


def test_a_derived_config_states_only_what_differs(base_file, tmp_path):
    child = write(tmp_path / "child.yaml", {"_BASE_": "base.yaml", "SOLVER": {"ITER_MAX": 7}})
    cfg, base = load_config(child), load_config(base_file)
    assert cfg.SOLVER.ITER_MAX == 7 and base.SOLVER.ITER_MAX == 20000
    assert cfg.SOLVER.LR == base.SOLVER.LR and cfg.CRF == base.CRF  # the rest comes through
    grandchild = write(tmp_path / "grandchild.yaml", {"_BASE_": "child.yaml",
                                                      "EXP": {"ID": "third"}})
    third = load_config(grandchild)
    assert third.SOLVER.ITER_MAX == 7 and third.EXP.ID == "third"
    assert "_BASE_" not in third


def test_shipped_configs_derive_from_the_complete_protocol():
    for name in ("cocostuff164k", "voc12", "folder_example", "toy"):
        raw = yaml.safe_load(open(f"config/{name}.yaml"))
        assert raw["_BASE_"] == "cocostuff.yaml", name
        assert len(raw) < 10 and "AUGMENTATION" not in raw, name  # differences only
    assert "_BASE_" not in yaml.safe_load(open("config/cocostuff.yaml"))
    voc = load_config("config/voc12.yaml")
    assert voc.DATASET.N_CLASSES == 21 and voc.CRF.BI_XY_STD == 49.0
    assert voc.AUGMENTATION.SCALE_CHOICES == [0.5, 0.75, 1.0, 1.25, 1.5]  # from the base


def test_base_errors_are_one_line(base_file, tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write(a, {"_BASE_": "b.yaml"})
    write(b, {"_BASE_": "a.yaml"})
    with pytest.raises(ConfigError, match=r"_BASE_ chain loops back to itself \(a.yaml -> "
                                          r"b.yaml -> a.yaml\)"):
        load_config(a)
    lost = write(tmp_path / "lost.yaml", {"_BASE_": "nowhere.yaml"})
    with pytest.raises(ConfigError, match=r"lost.yaml: key _BASE_: .*nowhere.yaml not found$"):
        load_config(lost)
    typo = write(tmp_path / "typo.yaml", {"_BASE_": "base.yaml", "SOLVER": {"LRR": 1.0}})
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key SOLVER.LRR$"):
        load_config(typo)


def test_set_overrides_values_as_yaml(base_file):
    cfg = load_config(base_file, overrides=["SOLVER.ITER_MAX=1000", "SOLVER.LR=1e-3",
                                            "MODEL.MSC.SCALES=[0.5]", "MODEL.INIT_MODEL=null",
                                            "EXP.ID = run 2"])
    assert cfg.SOLVER.ITER_MAX == 1000 and cfg.SOLVER.LR == 1e-3
    assert cfg.MODEL.MSC.SCALES == [0.5] and cfg.MODEL.INIT_MODEL is None
    assert cfg.EXP.ID == "run 2"


def test_yaml_floats_without_a_dot_are_numbers(base_file, tmp_path):
    raw = yaml.safe_load(base_file.read_text())
    text = base_file.read_text().replace(f"LR: {raw['SOLVER']['LR']}", "LR: 1e-3")
    assert "LR: 1e-3" in text
    (tmp_path / "e.yaml").write_text(text)
    assert load_config(tmp_path / "e.yaml").SOLVER.LR == 1e-3
    assert load_config(base_file, overrides=["SOLVER.WEIGHT_DECAY=5E-4",
                                             "SOLVER.LR=+2.5e-4"]).SOLVER.LR == 2.5e-4
    with pytest.raises(ConfigError, match="SOLVER.ITER_MAX: expected an integer, got 1000000.0"):
        load_config(base_file, overrides=["SOLVER.ITER_MAX=1e6"])


@pytest.mark.parametrize("override, message", [
    ("SOLVER.ITER_MAXX=5", r"base.yaml: --set SOLVER.ITER_MAXX: unknown key SOLVER.ITER_MAXX$"),
    ("SOLVR.LR=1", r"base.yaml: --set SOLVR.LR: unknown key SOLVR$"),
    ("SOLVER.ITER_MAX=many", r"base.yaml: key SOLVER.ITER_MAX: expected an integer, got 'many'$"),
    ("SOLVER.ITER_MAX", r"--set 'SOLVER.ITER_MAX': expected KEY=VALUE"),
    ("SOLVER.MSC=[1", r"--set SOLVER.MSC: '\[1' is not a YAML value$"),
])
def test_set_errors_name_the_key(base_file, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(base_file, overrides=[override])


def test_scripts_take_set(toy_cfg, synthetic_root, tmp_path):
    config = write(tmp_path / "toy.yaml", toy_cfg.to_dict())
    runner = CliRunner()
    moved = runner.invoke(check_cli.main, ["--config", str(config), "--no-progress",
                                           "--set", "DATASET.SPLIT.TEST=nope"])
    assert moved.exit_code == 1 and "nope" in moved.output
    bad = runner.invoke(check_cli.main, ["--config", str(config), "--set", "SOLVER.LRR=1"])
    assert bad.exit_code == 1
    assert bad.output.strip() == f"Error: {config}: --set SOLVER.LRR: unknown key SOLVER.LRR"
    good = runner.invoke(check_cli.main, ["--config", str(config), "--no-progress",
                                          "--set", "DATASET.SPLIT.TEST=train"])
    assert good.exit_code == 0, good.output
