"""draw_model.py: TensorBoard's own reader finds the graph; the summary's shapes and counts are right."""

import re

import yaml
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import draw_model
from libs.models import build_model

SIZE = 33  # stride 2 conv -> 17, ceil-mode pool -> 9, res3 stride 2 -> 5


def write_config(cfg, tmp_path):
    cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def test_graph_event_file_and_summary(toy_cfg, tmp_path):
    config_path = write_config(toy_cfg, tmp_path)
    result = CliRunner().invoke(draw_model.main, ["-c", str(config_path), "--size", str(SIZE)])
    assert result.exit_code == 0, result.output

    graphs = tmp_path / "runs" / "graph"
    log_dir = graphs / toy_cfg.EXP.ID  # one folder per config
    assert f"graph: {log_dir}" in result.output
    assert not list(graphs.glob("events.out.tfevents.*"))
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    tags = accumulator.Tags()
    assert tags["graph"]
    # the graph and nothing else: no scalars, tensors, images or run metadata
    assert not any(tags[kind] for kind in ("scalars", "tensors", "images", "run_metadata"))
    graph = accumulator.Graph()
    names = [node.name for node in graph.node]
    for layer in ("ASPP[aspp]/Conv2d[c3]", "ResNetBackbone[backbone]", "MaxPool2d[pool1]"):
        assert any(layer in name for name in names), layer

    out = result.output
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(\S+)\s+(\w+)\s+([\dx]+)\s+([\d,]+)\s+(\d+)$", out, re.MULTILINE)}
    n_classes = toy_cfg.DATASET.N_CLASSES
    assert rows["base.backbone.conv1"][:2] == ("ConvBnReLU", "1x8x17x17")
    assert rows["base.backbone.pool1"][1] == "1x8x9x9"
    assert rows["base.aspp.c0"][1] == f"1x{n_classes}x5x5"
    assert rows["base.aspp.c0"][3] == str(1 + len(toy_cfg.MODEL.MSC.SCALES))  # MSC calls
    model = build_model(toy_cfg.MODEL, toy_cfg.DATASET.N_CLASSES)
    aspp_params = model.base.aspp["c0"].weight.numel() + model.base.aspp["c0"].bias.numel()
    assert int(rows["base.aspp.c0"][2].replace(",", "")) == aspp_params
    total = sum(p.numel() for p in model.parameters())
    assert f"model output (fused logits): 1x{n_classes}x5x5" in out
    assert f"{total:,} parameters" in out
    assert sum(int(r[2].replace(",", "")) for r in rows.values()) == total


def test_each_config_gets_its_own_graph_folder(toy_cfg, tmp_path):
    for exp_id in ("first", "second"):
        toy_cfg.EXP.ID = exp_id
        config_path = write_config(toy_cfg, tmp_path)
        result = CliRunner().invoke(draw_model.main, ["-c", str(config_path), "--size", "17"])
        assert result.exit_code == 0, result.output
    graphs = tmp_path / "runs" / "graph"
    assert sorted(p.name for p in graphs.iterdir()) == ["first", "second"]
    for exp_id in ("first", "second"):
        assert len(list((graphs / exp_id).glob("events.out.tfevents.*"))) == 1


def test_bad_config_is_one_line(tmp_path):
    config_path = tmp_path / "bad.yaml"
    config_path.write_text("EXP: [unclosed\n")
    result = CliRunner().invoke(draw_model.main, ["-c", str(config_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {config_path}: invalid YAML at line 2"]
