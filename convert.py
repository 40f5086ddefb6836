#!/usr/bin/env python
"""Convert the DeepLab v2 authors' Caffe weights into PyTorch state dicts, without Caffe.

    python convert.py --dataset coco_init   # init.caffemodel -> deeplabv2_resnet101_COCO_init.pth
    python convert.py --dataset voc12       # train2_iter_20000.caffemodel -> ..._VOC2012.pth

See docs/convert.md for the mapping rules and what is checked.
"""

from pathlib import Path

import click

from libs.models import DeepLabV2_ResNet101_MSC, build_model
from libs.caffe.converter import ConversionError, convert_caffe_layers
from libs.caffe.names import CAFFE_PRESETS
from libs.caffe.protobuf import CaffeModelError, read_caffemodel
from libs.utils.atomic import save_torch
from libs.utils.config import ConfigError, load_config


def _target_model(preset, config_path):
    """The model the weights must fit (only its structure and tensor shapes are used)."""
    if config_path is None:
        return DeepLabV2_ResNet101_MSC(preset.n_classes), f"{preset.n_classes} classes"
    try:
        cfg = load_config(config_path)
    except ConfigError as e:  # its message already names the file
        raise click.ClickException(str(e)) from None
    try:
        model = build_model(cfg.MODEL, cfg.DATASET.N_CLASSES)
    except ValueError as e:
        raise click.ClickException(f"{config_path}: {e}") from None
    return model, f"{cfg.DATASET.N_CLASSES} classes from {config_path}"


def _verify_loads(state_dict, model, backbone_only, output):
    """The saved dict must load as training and evaluation will load it."""
    try:
        result = model.load_state_dict(state_dict, strict=not backbone_only, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise click.ClickException(f"{output}: internal error, converted weights do not load "
                                   f"({first})") from None
    if backbone_only:
        stray = [k for k in result.missing_keys if not k.startswith("base.aspp.")]
        if stray or result.unexpected_keys:
            raise click.ClickException(
                f"{output}: internal error, backbone state dict does not fit the model "
                f"({(stray + result.unexpected_keys)[0]})"
            )


@click.command()
@click.option(
    "--dataset",
    required=True,
    type=click.Choice(sorted(CAFFE_PRESETS)),
    help="Which released caffemodel: coco_init (alias init): ResNet-101 pre-trained on "
    "MS-COCO, the initial weights of training; voc12: the trained PASCAL VOC 2012 model.",
)
@click.option(
    "--caffemodel",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Input .caffemodel (default: the preset's path under data/models/deeplab_resnet101/).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output .pth (default: the preset's name, next to the default input).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Build the target model from this config (MODEL.* and DATASET.N_CLASSES) instead "
    "of ResNet-101 with the caffemodel's own class count; voc12 then fails unless the "
    "config has 21 classes.",
)
def main(dataset, caffemodel, output, config_path):
    """Convert a DeepLab v2 .caffemodel into a PyTorch state dict (no Caffe needed).

    Every parameter layer of the file must map onto the model and every tensor
    of the target must be filled exactly once, with matching shapes and layer
    geometry; otherwise nothing is written. The output is written atomically
    and loads with torch.load(path, weights_only=True).
    """
    preset = CAFFE_PRESETS[dataset]
    caffemodel = Path(caffemodel or preset.caffemodel)
    output = Path(output or preset.output)
    if caffemodel.resolve() == output.resolve():
        raise click.ClickException(f"{output}: output would overwrite the input caffemodel")
    model, classes = _target_model(preset, config_path)
    click.echo(f"{dataset}: {preset.description}")
    click.echo(f"target: {type(model).__name__}, {classes}"
               + (", backbone only" if preset.backbone_only else ""))
    try:
        layers = read_caffemodel(caffemodel)
        state_dict, summary = convert_caffe_layers(
            layers, model, preset.classifier, preset.backbone_only, source=caffemodel
        )
    except (CaffeModelError, ConversionError) as e:
        raise click.ClickException(str(e)) from None
    del layers
    _verify_loads(state_dict, model, preset.backbone_only, output)
    for line in summary.lines():
        click.echo(line)
    if preset.backbone_only:
        heads = ", ".join(f"{name} ({n} outputs)" for name, n in summary.classifier) or "none"
        click.echo(
            f"note: the COCO init model's classifier ({heads}) is not DeepLab v2's ASPP, so "
            f"only the backbone was converted ({len(state_dict)} base.backbone.* tensors). "
            "Training loads it with strict=False and the ASPP (base.aspp.*) keeps its own "
            "initialisation (gaussian std 0.01, zero bias)."
        )
    try:
        save_torch(state_dict, output)
    except OSError as e:
        raise click.ClickException(f"{output}: cannot write ({e.strerror})") from None
    click.echo(f"saved {output}")


if __name__ == "__main__":
    main()
