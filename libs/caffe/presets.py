"""The released DeepLab v2 caffemodels, and the way from one on disk to a checked state dict.

The target model is the paper's ResNet-101 with the file's own class count, or the one a config's
``MODEL`` section describes, so a narrow quick-start net or a 182-class COCO-Stuff model can be
checked against the file just as well.
"""

from dataclasses import dataclass
from pathlib import Path

from ..models import DeepLabV2_ResNet101_MSC, build_model
from ..utils.errors import ConversionError, OutputError, first_line
from .converter import convert_caffe_layers
from .protobuf import read_caffemodel


@dataclass(frozen=True)
class CaffePreset:
    """One of the released caffemodels and the file it converts into. ``classifier`` prefixes the
    names of the file's classification layers (``fc1_voc12_c0`` ..), with ``n_classes`` outputs;
    ``backbone_only``: that classifier is not DeepLab v2's ASPP (the MS-COCO init model), so it is
    skipped and the ASPP keeps its own initialisation."""

    caffemodel: str
    output: str
    n_classes: int
    classifier: str
    backbone_only: bool
    description: str


# Paths and class counts of the original project's convert.py presets.
CAFFE_PRESETS = {
    "coco_init": CaffePreset(
        caffemodel="data/models/deeplab_resnet101/coco_init/init.caffemodel",
        output="data/models/deeplab_resnet101/coco_init/deeplabv2_resnet101_COCO_init.pth",
        n_classes=91, classifier="fc", backbone_only=True,  # any fc* convolution: it is skipped
        description="ResNet-101 pre-trained on MS-COCO (init.caffemodel), the start of training"),
    "voc12": CaffePreset(
        caffemodel="data/models/deeplab_resnet101/voc12/train2_iter_20000.caffemodel",
        output="data/models/deeplab_resnet101/voc12/deeplabv2_resnet101_VOC2012.pth",
        n_classes=21, classifier="fc1_voc12", backbone_only=False,
        description="DeepLab v2 MSC trained on PASCAL VOC 2012 (train2_iter_20000.caffemodel)"),
}
# The later upstream README calls the COCO init conversion "--dataset init".
CAFFE_PRESETS["init"] = CAFFE_PRESETS["coco_init"]


def preset_paths(preset, caffemodel=None, output=None):
    """``(caffemodel, output)`` as paths, each the preset's own unless given; an
    :class:`OutputError` when both name one file (the rename would replace the input)."""
    caffemodel, output = Path(caffemodel or preset.caffemodel), Path(output or preset.output)
    if caffemodel.resolve() == output.resolve():
        raise OutputError(f"{output}: output would overwrite the input caffemodel")
    return caffemodel, output


def target_model(preset, model_cfg=None, n_classes=None):
    """The model the weights must fit (only its structure and tensor shapes are used): the paper's
    network with the preset's class count, or the one ``model_cfg`` (a config's ``MODEL``)
    describes with ``n_classes`` classes (an unknown ``MODEL.NAME`` raises ``ConfigError``)."""
    if model_cfg is None:
        return DeepLabV2_ResNet101_MSC(preset.n_classes)
    return build_model(model_cfg, n_classes)


def convert_caffemodel(caffemodel, model, preset):
    """Read ``caffemodel`` and map it onto ``model`` as ``preset`` says: ``(state_dict, summary)``
    (``CheckpointError``: unreadable file; ``ConversionError``: it does not fit the model)."""
    return convert_caffe_layers(read_caffemodel(caffemodel), model, preset.classifier,
                                preset.backbone_only, source=caffemodel)


def check_loads(state_dict, model, backbone_only, output):
    """Raise :class:`ConversionError` (naming ``output``) unless ``state_dict`` loads into ``model``
    as training and evaluation will load it (``assign=True``: the model's tensors are replaced).
    The converter checked every layer, so a failure here is a bug in the mapping, and says so."""
    try:
        result = model.load_state_dict(state_dict, strict=not backbone_only, assign=True)
    except RuntimeError as e:
        raise ConversionError(f"{output}: internal error, converted weights do not load "
                              f"({first_line(e)})") from None
    stray = [k for k in result.missing_keys if not k.startswith("base.aspp.")]  # left to init
    if backbone_only and (stray or result.unexpected_keys):
        raise ConversionError(f"{output}: internal error, backbone state dict does not fit the "
                              f"model ({(stray + result.unexpected_keys)[0]})")
