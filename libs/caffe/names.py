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

MULTISCALE_TAGS = ("res075", "res05")

_STEM_NORM = re.compile(r"^(bn|scale)_conv1$")
_BLOCK_CONV = re.compile(r"^res(\d)([a-z]\d*)_branch(1|2[abc])$")
_BLOCK_NORM = re.compile(r"^(bn|scale)(\d)([a-z]\d*)_branch(1|2[abc])$")
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


def _block_path(stage, block, branch):
    return f"base.backbone.res{stage}.{block}.branch{branch}"


def caffe_target(name, layer_type, classifier, backbone_only):
    """The :class:`CaffeTarget` of Caffe layer ``name`` of type ``layer_type``, or ``None`` when no
    rule covers it (an error if the layer carries blobs: the caller decides)."""
    if is_multiscale_copy(name):
        return CaffeTarget(SKIP, reason="shared-weight multi-scale branch (res075/res05)")
    kind = {"Convolution": CONV, "BatchNorm": BATCHNORM, "Scale": SCALE, "Pooling": POOL}.get(
        layer_type)
    if kind == CONV:
        if name == "conv1":
            return CaffeTarget(CONV, "base.backbone.conv1.conv")
        m = _BLOCK_CONV.match(name)
        if m:
            return CaffeTarget(CONV, _block_path(*m.groups()) + ".conv")
        if name.startswith(classifier) and backbone_only:
            return CaffeTarget(SKIP, reason="classifier of the COCO init model (the ASPP keeps "
                                            "its own init)")
        m = _ASPP.match(name)
        if name.startswith(classifier) and m and m.group("head") == classifier:
            return CaffeTarget(CONV, f"base.aspp.c{int(m.group('index'))}")
    if kind in (BATCHNORM, SCALE):
        prefix = "bn" if kind == BATCHNORM else "scale"
        m = _STEM_NORM.match(name)
        if m and m.group(1) == prefix:
            return CaffeTarget(kind, "base.backbone.conv1.bn")
        m = _BLOCK_NORM.match(name)
        if m and m.group(1) == prefix:
            return CaffeTarget(kind, _block_path(*m.groups()[1:]) + ".bn")
    if kind == POOL and name == "pool1":
        return CaffeTarget(POOL, "base.backbone.pool1")
    return None
