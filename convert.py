#!/usr/bin/env python
"""Convert the DeepLab v2 authors' Caffe weights into PyTorch state dicts, without Caffe.

    python convert.py --dataset coco_init   # init.caffemodel -> deeplabv2_resnet101_COCO_init.pth
    python convert.py --dataset voc12       # train2_iter_20000.caffemodel -> ..._VOC2012.pth

See docs/convert.md for the mapping rules and what is checked.
"""

from pathlib import Path

import click

from libs.caffe import CAFFE_PRESETS, check_loads, convert_caffemodel, preset_paths, target_model
from libs.cli import command, load_cli_config, one_line_errors
from libs.utils.atomic import check_writable_output, refuse_overwriting_inputs, save_torch


@command()
@click.option("--dataset", required=True, type=click.Choice(sorted(CAFFE_PRESETS)),
              help="Which released caffemodel: coco_init (alias init): ResNet-101 pre-trained on "
                   "MS-COCO, the initial weights of training; voc12: the trained PASCAL VOC 2012 "
                   "model.")
@click.option("--caffemodel", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Input .caffemodel (default: the preset's path under "
                   "data/models/deeplab_resnet101/).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output .pth (default: the preset's name, next to the default input).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Build the target model from this config (MODEL.* and DATASET.N_CLASSES) "
                   "instead of ResNet-101 with the caffemodel's own class count; voc12 then fails "
                   "unless the config has 21 classes.")
def main(dataset, caffemodel, output, config_path):
    """Convert a DeepLab v2 .caffemodel into a PyTorch state dict (no Caffe needed).

    Every parameter layer of the file must map onto the model and every tensor
    of the target must be filled exactly once, with matching shapes and layer
    geometry; otherwise nothing is written. The output is written atomically
    and loads with torch.load(path, weights_only=True).
    """
    preset = CAFFE_PRESETS[dataset]
    with one_line_errors(config_path):
        caffemodel, output = preset_paths(preset, caffemodel, output)
        refuse_overwriting_inputs(output, {"caffemodel": caffemodel, "config file": config_path})
        check_writable_output(output)  # before the conversion
        if config_path is None:
            model, classes = target_model(preset), f"{preset.n_classes} classes"
        else:
            cfg = load_cli_config(config_path)
            model = target_model(preset, cfg.MODEL, cfg.DATASET.N_CLASSES)
            classes = f"{cfg.DATASET.N_CLASSES} classes from {config_path}"
        click.echo(f"{dataset}: {preset.description}")
        click.echo(f"target: {type(model).__name__}, {classes}"
                   + (", backbone only" if preset.backbone_only else ""))
        state_dict, summary = convert_caffemodel(caffemodel, model, preset)
        check_loads(state_dict, model, preset.backbone_only, output)
        click.echo("\n".join(summary.lines()))
        if preset.backbone_only:  # why the conversion is complete although the ASPP got nothing
            heads = ", ".join(f"{name} ({n} outputs)" for name, n in summary.classifier) or "none"
            click.echo(f"note: the COCO init model's classifier ({heads}) is not DeepLab v2's "
                       f"ASPP, so only the backbone was converted ({len(state_dict)} "
                       "base.backbone.* tensors). Training loads it with strict=False and the "
                       "ASPP (base.aspp.*) keeps its own initialisation (gaussian std 0.01, zero "
                       "bias).")
        save_torch(state_dict, output)
    click.echo(f"saved {output}")


if __name__ == "__main__":
    main()
