"""The released DeepLab v2 weights that can be asked for by name.

kazuto1011/deeplab-pytorch's three ResNet-101 MSC checkpoints (v1.0 release) are the most used
DeepLab v2 weights in PyTorch, so one word reaches them (``--model-path voc12``). Each entry
records the file's URL and its class count (checked before a download, so a wrong
``n_classes`` fails at once instead of after 170 MB); ``released.py`` maps its keys to ours.
"""

from collections import namedtuple
from pathlib import Path

RELEASE_URL = "https://github.com/kazuto1011/deeplab-pytorch/releases/download/v1.0/"
ZooEntry = namedtuple("ZooEntry", "url n_classes dataset")

# Every file is in the released key layout (MSC(DeepLabV2) keys base.layerN.blockK...).
ZOO = {
    "cocostuff10k": ZooEntry(RELEASE_URL + "deeplabv2_resnet101_msc-cocostuff10k-20000.pth",
                             182, "COCO-Stuff 10k"),
    "cocostuff164k": ZooEntry(RELEASE_URL + "deeplabv2_resnet101_msc-cocostuff164k-100000.pth",
                              182, "COCO-Stuff 164k"),
    "voc12": ZooEntry(RELEASE_URL + "deeplabv2_resnet101_msc-vocaug-20000.pth", 21,
                      "PASCAL VOC 2012 + SBD (train_aug)"),
}


def is_zoo_name(name):
    """Whether ``name`` (a path or a string) is one of the released weights' names."""
    return isinstance(name, str) and name in ZOO


def results_stem(model_path, released_dir):
    """The path whose folder and stem name a model's outputs: a released model's name (its file
    sits in the torch hub cache) names ``released_dir/<name>.pth``."""
    if is_zoo_name(str(model_path)) and not Path(model_path).exists():
        return Path(released_dir) / f"{model_path}.pth"
    return Path(model_path)

