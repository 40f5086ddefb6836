"""The released DeepLab v2 caffemodels: where each lives, what it becomes, which model it fits.

A preset names one of the authors' files, the ``.pth`` it converts into, and
the shape of its classifier. Without a config the target model is the paper's
ResNet-101 with the file's own class count; with one, it is the model the
config's ``MODEL`` section describes, so a narrow quick-start net or a
182-class COCO-Stuff model can be checked against the file just as well.
"""

from dataclasses import dataclass
from pathlib import Path

from ..models import DeepLabV2_ResNet101_MSC, build_model
from ..utils.errors import OutputError


@dataclass(frozen=True)
class CaffePreset:
    """One of the released DeepLab v2 caffemodels and the file it converts into.

    ``classifier`` is the name prefix of the file's classification layers
    (``fc1_voc12`` gives ``fc1_voc12_c0`` .. ``fc1_voc12_c3``).
    ``backbone_only`` models have a classifier that is not DeepLab v2's ASPP
    (the MS-COCO init model); it is skipped and the ASPP keeps its own
    initialisation. ``n_classes`` is the classifier's output count in the file.
    """

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
        n_classes=91,
        classifier="fc",  # any fc* convolution: its exact name is irrelevant, it is skipped
        backbone_only=True,
        description="ResNet-101 pre-trained on MS-COCO (init.caffemodel), the start of training",
    ),
    "voc12": CaffePreset(
        caffemodel="data/models/deeplab_resnet101/voc12/train2_iter_20000.caffemodel",
        output="data/models/deeplab_resnet101/voc12/deeplabv2_resnet101_VOC2012.pth",
        n_classes=21,
        classifier="fc1_voc12",
        backbone_only=False,
        description="DeepLab v2 MSC trained on PASCAL VOC 2012 (train2_iter_20000.caffemodel)",
    ),
}
# The later upstream README calls the COCO init conversion "--dataset init".
CAFFE_PRESETS["init"] = CAFFE_PRESETS["coco_init"]


def preset_paths(preset, caffemodel=None, output=None):
    """``(caffemodel, output)`` as paths, each the preset's own unless given.

    Raises :class:`OutputError` when both name the same file: the atomic
    rename would replace the input with its own conversion.
    """
    caffemodel = Path(caffemodel or preset.caffemodel)
    output = Path(output or preset.output)
    if caffemodel.resolve() == output.resolve():
        raise OutputError(f"{output}: output would overwrite the input caffemodel")
    return caffemodel, output


def target_model(preset, model_cfg=None, n_classes=None):
    """The model the weights must fit (only its structure and tensor shapes are used).

    Without ``model_cfg`` it is the paper's network with the preset's class
    count; otherwise the one a config's ``MODEL`` section describes, with
    ``n_classes`` classes (an unknown ``MODEL.NAME`` raises ``ModelError``).
    """
    if model_cfg is None:
        return DeepLabV2_ResNet101_MSC(preset.n_classes)
    return build_model(model_cfg, n_classes)
