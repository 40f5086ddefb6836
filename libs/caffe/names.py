"""Where each layer of the DeepLab v2 Caffe models goes in our PyTorch model.

Our module paths mirror the Caffe layer names (``res4b22_branch2c`` ->
``base.backbone.res4.b22.branch2c.conv``; the table is in docs/convert.md, "Mapping rules"), so
one rule per kind of layer is enough. The MSC net's ``_res075`` / ``_res05`` copies of every
layer share the 1x layers' weights and are skipped.
"""

import re
from dataclasses import dataclass

# Layer kinds returned by caffe_target().
CONV, BATCHNORM, SCALE, POOL, SKIP = "conv", "batchnorm", "scale", "pool", "skip"
KINDS = {"Convolution": CONV, "BatchNorm": BATCHNORM, "Scale": SCALE, "Pooling": POOL}

MULTISCALE_TAGS = ("res075", "res05")
_BLOCK = r"(\d)([a-z]\d*)_branch(1|2[abc])"  # res4b22_branch2c: stage 4, block b22, branch 2c
_BLOCK_PATH = r"base.backbone.res\1.\2.branch\3"
# (layer type, full-match name pattern, module path template) of the backbone's layers.
RULES = [
    ("Convolution", "conv1", "base.backbone.conv1.conv"),
    ("Convolution", "res" + _BLOCK, _BLOCK_PATH + ".conv"),
    ("BatchNorm", "bn_conv1", "base.backbone.conv1.bn"),
    ("BatchNorm", "bn" + _BLOCK, _BLOCK_PATH + ".bn"),
    ("Scale", "scale_conv1", "base.backbone.conv1.bn"),
    ("Scale", "scale" + _BLOCK, _BLOCK_PATH + ".bn"),
    ("Pooling", "pool1", "base.backbone.pool1"),
]
_ASPP = re.compile(r"^(?P<head>.+)_c(?P<index>\d+)$")


@dataclass(frozen=True)
class CaffeTarget:
    """What to do with one Caffe layer: ``kind`` and the module path it maps to (or why not)."""

    kind: str
    module: str = ""
    reason: str = ""


def is_multiscale_copy(name):
    """True for the layers of the shared-weight 0.75x / 0.5x branches."""
    return any(tag in name for tag in MULTISCALE_TAGS)


def caffe_target(name, layer_type, classifier, backbone_only):
    """The :class:`CaffeTarget` of Caffe layer ``name`` of type ``layer_type``, or ``None`` when no
    rule covers it (an error if the layer carries blobs: the caller decides)."""
    if is_multiscale_copy(name):
        return CaffeTarget(SKIP, reason="shared-weight multi-scale branch (res075/res05)")
    for rule_type, pattern, template in RULES:
        if layer_type == rule_type and (m := re.fullmatch(pattern, name)):
            return CaffeTarget(KINDS[layer_type], m.expand(template))
    if layer_type != "Convolution" or not name.startswith(classifier):
        return None
    if backbone_only:
        return CaffeTarget(SKIP, reason="classifier of the COCO init model (the ASPP keeps its "
                                        "own init)")
    m = _ASPP.match(name)
    if m and m.group("head") == classifier:
        return CaffeTarget(CONV, f"base.aspp.c{int(m.group('index'))}")
    return None
