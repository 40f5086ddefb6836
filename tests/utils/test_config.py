"""The strict YAML config loader: every defect is one line naming the file and the key."""

from pathlib import Path

import pytest
import yaml

from libs.utils.config import load_config
from libs.utils.errors import ConfigError


@pytest.fixture
def raw():
    with open("config/cocostuff.yaml") as f:
        return yaml.safe_load(f)


def write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_cocostuff_defaults_match_the_original_protocol():
    cfg = load_config("config/cocostuff.yaml")
    assert cfg.DATASET.N_CLASSES == 182 and cfg.DATASET.IGNORE_LABEL == 255
    assert cfg.MODEL.BACKBONE.N_BLOCKS == [3, 4, 23, 3]
    assert cfg.MODEL.ATROUS_RATES == [6, 12, 18, 24]
    assert cfg.MODEL.MSC.SCALES == [0.5, 0.75]
    assert (cfg.SOLVER.BATCH_SIZE.TRAIN, cfg.SOLVER.ITER_SIZE) == (5, 2)
    assert cfg.SOLVER.ITER_MAX == 20000 and cfg.SOLVER.ITER_SNAP == 5000
    assert (cfg.SOLVER.LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY) == (2.5e-4, 0.9, 5e-4)
    assert (cfg.SOLVER.POLY_POWER, cfg.SOLVER.LR_DECAY) == (0.9, 10)
    assert dict(cfg.SOLVER.LR_MULT) == {"BACKBONE": 1.0, "ASPP_WEIGHT": 10.0, "ASPP_BIAS": 20.0}
    assert (cfg.IMAGE.SIZE.TRAIN, cfg.IMAGE.SIZE.TEST) == (321, 513)
    assert cfg.AUGMENTATION.SCALE_CHOICES == [0.5, 0.75, 1.0, 1.25, 1.5]  # Caffe's train.prototxt
    assert cfg.AUGMENTATION.SCALE_RANGE is None and cfg.AUGMENTATION.FLIP is True
    assert cfg.IMAGE.SIZE.DEMO == 513
    assert dict(cfg.IMAGE.MEAN) == {"B": 104.008, "G": 116.669, "R": 122.675}
    assert cfg.EXP.LOG_DIR == "runs"
    assert (cfg.CRF.ITER_MAX, cfg.CRF.POS_W, cfg.CRF.POS_XY_STD) == (10, 3, 1)
    assert (cfg.CRF.BI_W, cfg.CRF.BI_XY_STD, cfg.CRF.BI_RGB_STD) == (4, 67, 3)


def test_toy_config_loads():
    cfg = load_config("config/toy.yaml")
    assert cfg.MODEL.BACKBONE.N_BLOCKS == [1, 1, 1, 1]
    assert cfg.DATASET.SYNTHETIC.N_TRAIN > 0
    assert cfg.AUGMENTATION.SCALE_CHOICES == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert cfg.AUGMENTATION.SCALE_RANGE is None


def test_loaded_config_is_frozen_against_typos():
    cfg = load_config("config/cocostuff.yaml")
    with pytest.raises(KeyError):
        cfg.SOLVER.LRR


def test_missing_key(tmp_path, raw):
    del raw["SOLVER"]["MOMENTUM"]
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: missing key SOLVER.MOMENTUM"


def test_misspelled_key(tmp_path, raw):
    raw["SOLVER"]["MOMENTUMM"] = raw["SOLVER"].pop("MOMENTUM")
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=r"unknown key SOLVER\.MOMENTUMM$") as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_unknown_top_level_section(tmp_path, raw):
    raw["EXTRA"] = {"A": 1}
    with pytest.raises(ConfigError, match="unknown key EXTRA$"):
        load_config(write(tmp_path, raw))


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("SOLVER", "ITER_MAX", 2.5, "key SOLVER.ITER_MAX: expected an integer, got 2.5"),
        ("SOLVER", "LR", "fast", "key SOLVER.LR: expected a number, got 'fast'"),
        ("AUGMENTATION", "FLIP", "yes please", "key AUGMENTATION.FLIP: expected true/false"),
        ("DATASET", "N_CLASSES", True, "key DATASET.N_CLASSES: expected an integer, got True"),
        ("MODEL", "BACKBONE", {"NAME": "resnet101_caffe", "N_BLOCKS": [3, 4, 23], "BASE_WIDTH": 64,
                               "BN": "frozen"},
         "key MODEL.BACKBONE.N_BLOCKS: expected a list of length 4"),
        ("MODEL", "ATROUS_RATES", [6, "x"], "key MODEL.ATROUS_RATES[1]: expected an integer"),
        ("IMAGE", "SIZE", 321, "key IMAGE.SIZE: expected a mapping"),
    ],
)
def test_wrong_types(tmp_path, raw, section, key, value, message):
    raw[section][key] = value
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {message}")
    assert "\n" not in str(e.value)


def test_integers_are_accepted_as_numbers(tmp_path, raw):
    raw["SOLVER"]["LR"] = 1
    cfg = load_config(write(tmp_path, raw))
    assert cfg.SOLVER.LR == 1.0 and isinstance(cfg.SOLVER.LR, float)


def test_optional_values(tmp_path, raw):
    raw["MODEL"]["INIT_MODEL"] = None
    assert load_config(write(tmp_path, raw)).MODEL.INIT_MODEL is None
    raw["MODEL"]["INIT_MODEL"] = 3
    with pytest.raises(ConfigError, match="MODEL.INIT_MODEL: expected a string"):
        load_config(write(tmp_path, raw))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("SOLVER:\n  LR: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_config(path)


def test_yaml_is_parsed_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("EXP: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(path)


def test_cocostuff164k_config_differs_only_in_dataset_and_schedule():
    ten = load_config("config/cocostuff.yaml").to_dict()
    big = load_config("config/cocostuff164k.yaml").to_dict()
    assert big["DATASET"]["NAME"] == "cocostuff164k"
    assert big["DATASET"]["SPLIT"] == {"TRAIN": "train2017", "TEST": "val2017"}
    assert big["SOLVER"]["ITER_MAX"] == 100000
    for section in ("MODEL", "IMAGE", "AUGMENTATION", "CRF"):
        assert big[section] == ten[section], section
    same_solver = {k: v for k, v in big["SOLVER"].items() if k != "ITER_MAX"}
    assert same_solver == {k: v for k, v in ten["SOLVER"].items() if k != "ITER_MAX"}


# --------------------------------------------------------------------------- scale augmentation

BOTH_KEYS = "AUGMENTATION.SCALE_CHOICES and AUGMENTATION.SCALE_RANGE"


def test_scale_range_is_the_continuous_option(tmp_path, raw):
    raw["AUGMENTATION"]["SCALE_CHOICES"] = None
    raw["AUGMENTATION"]["SCALE_RANGE"] = [0.5, 2]
    cfg = load_config(write(tmp_path, raw))
    assert cfg.AUGMENTATION.SCALE_CHOICES is None and cfg.AUGMENTATION.SCALE_RANGE == [0.5, 2.0]
    raw["AUGMENTATION"]["SCALE_RANGE"] = [1, 1]  # a fixed scale is a valid range
    assert load_config(write(tmp_path, raw)).AUGMENTATION.SCALE_RANGE == [1.0, 1.0]


@pytest.mark.parametrize(
    "choices, value_range, message",
    [
        (None, None, f"{BOTH_KEYS} are both null; set exactly one (Caffe's protocol: "
                     "SCALE_CHOICES: [0.5, 0.75, 1.0, 1.25, 1.5])"),
        ([0.5, 1.0], [0.5, 1.5], f"{BOTH_KEYS} are both set; set exactly one, the other null"),
        ([0.5, 0, 1.5], None,
         "key AUGMENTATION.SCALE_CHOICES[1]: expected a positive number, got 0.0"),
        ([], None, "key AUGMENTATION.SCALE_CHOICES: expected at least 1 items, got 0"),
        (None, [-0.5, 1.5],
         "key AUGMENTATION.SCALE_RANGE[0]: expected a positive number, got -0.5"),
        (None, [1.5, 0.5], "key AUGMENTATION.SCALE_RANGE: expected [min, max] with min <= max, "
                           "got [1.5, 0.5]"),
        (None, [0.5, 1.0, 1.5], "key AUGMENTATION.SCALE_RANGE: expected a list of length 2 of a "
                                "number, got 3 items"),
        (1.0, None, "key AUGMENTATION.SCALE_CHOICES: expected a list of a number, got 1.0"),
    ],
)
def test_scale_keys_must_be_one_valid_choice(tmp_path, raw, choices, value_range, message):
    raw["AUGMENTATION"]["SCALE_CHOICES"] = choices
    raw["AUGMENTATION"]["SCALE_RANGE"] = value_range
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: {message}"


@pytest.mark.parametrize("keep_new_keys", [False, True])
def test_the_retired_scales_key_says_what_changed(tmp_path, raw, keep_new_keys):
    """An old config's two-element SCALES is never read as choices or as a range: it fails."""
    augmentation = raw["AUGMENTATION"] if keep_new_keys else {"FLIP": True}
    augmentation["SCALES"] = [0.5, 1.5]
    augmentation["ZOOM"] = 2  # sorts after SCALES: the retired key is still the one reported
    raw["AUGMENTATION"] = augmentation
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (
        f"{path}: AUGMENTATION.SCALES was a [min, max] range; use AUGMENTATION.SCALE_RANGE "
        "for that, or AUGMENTATION.SCALE_CHOICES for Caffe's discrete scales"
    )


def test_scales_elsewhere_is_just_an_unknown_key(tmp_path, raw):
    raw["MODEL"]["SCALES"] = [0.5, 0.75]
    with pytest.raises(ConfigError, match=r"unknown key MODEL\.SCALES$"):
        load_config(write(tmp_path, raw))


@pytest.mark.parametrize("value, got", [
    (True, "got True (true/false before; true was bf16)"),
    (False, "got False (true/false before; true was bf16)"),
    ("float16", "got 'float16' (true/false before; true was bf16)"),
    ("BF16", "got 'BF16' (true/false before; true was bf16)"),
])
def test_amp_is_null_or_a_precision_name(tmp_path, raw, value, got):
    raw["SOLVER"]["AMP"] = value
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: key SOLVER.AMP: expected one of 'bf16', 'fp16', {got}"


@pytest.mark.parametrize("value", [None, "bf16", "fp16"])
def test_amp_values_and_the_other_speed_switches_load(tmp_path, raw, value):
    raw["SOLVER"].update(AMP=value, CHANNELS_LAST=True, COMPILE=True, ACTIVATION_CHECKPOINTING=True)
    cfg = load_config(write(tmp_path, raw))
    assert cfg.SOLVER.AMP == value
    assert cfg.SOLVER.CHANNELS_LAST is cfg.SOLVER.COMPILE is cfg.SOLVER.ACTIVATION_CHECKPOINTING
    assert cfg.SOLVER.COMPILE is True
    raw["SOLVER"]["COMPILE"] = "yes"
    with pytest.raises(ConfigError, match=r"key SOLVER.COMPILE: expected true/false, got 'yes'$"):
        load_config(write(tmp_path, raw))


@pytest.mark.parametrize("old, value, new", [
    ("N_BLOCKS", [3, 4, 23, 3], "MODEL.BACKBONE.N_BLOCKS"),
    ("BASE_WIDTH", 64, "MODEL.BACKBONE.BASE_WIDTH"),
    ("BACKBONE_BN", "frozen", "MODEL.BACKBONE.BN"),
    ("MSC_SCALES", [0.5, 0.75], "MODEL.MSC.SCALES"),
    ("MSC_GEOMETRY", "caffe", "MODEL.MSC.GEOMETRY"),
])
def test_a_renamed_model_key_says_what_it_became(tmp_path, raw, old, value, new):
    raw["MODEL"][old] = value
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: key MODEL.{old} is now {new}"
    with pytest.raises(ConfigError) as e:
        load_config("config/toy.yaml", [f"MODEL.{old}={value}"])
    assert str(e.value).endswith(f"unknown key MODEL.{old} (now {new})")


@pytest.mark.parametrize("key, value", [("OUTPUT_STRIDE", 8), ("MULTI_GRID", [1]),
                                        ("HEAD_CHANNELS", 256), ("HEAD_BN", "train")])
def test_v3_keys_are_refused_in_a_v2_config(tmp_path, raw, key, value):
    raw["MODEL"][key] = value
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (f"{path}: key MODEL.{key}: DeepLabV2_ResNet101_MSC has no {key} (a "
                            "key of DeepLabV3_ResNet101 and DeepLabV3Plus_ResNet101); remove it")


def test_model_keys_follow_the_model_name(tmp_path):
    base = Path("config/cocostuff.yaml").resolve()
    raw = yaml.safe_load(open("config/cocostuff_deeplabv3.yaml")) | {"_BASE_": str(base)}
    raw["MODEL"]["DECODER_CHANNELS"] = 48
    with pytest.raises(ConfigError, match="DeepLabV3_ResNet101 has no DECODER_CHANNELS"):
        load_config(write(tmp_path, raw))
    raw["MODEL"]["NAME"] = "DeepLabV3Plus_ResNet101"
    assert load_config(write(tmp_path, raw)).MODEL.DECODER_CHANNELS == 48
    del raw["MODEL"]["HEAD_BN"]
    with pytest.raises(ConfigError, match="missing key MODEL.HEAD_BN$"):
        load_config(write(tmp_path, raw))
