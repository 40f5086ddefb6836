"""The key layout of kazuto1011/deeplab-pytorch's released checkpoints, mapped to ours.

Those files hold that repository's ``MSC(DeepLabV2)``: the same network as ours with other
module names, so the rule (the table in docs/model.md) is purely a renaming, e.g.
``base.layer4.block23.reduce.*`` -> ``base.backbone.res4.b22.branch2a.*`` (the block's Caffe
name depends on the stage's block count, read from the keys). Files saved before PyTorch 0.4
lack ``num_batches_tracked``; it is filled with 0, as convert.py does (a frozen BatchNorm never
reads it).
"""

import re
from collections import defaultdict

import torch

from .resnet import block_names

BRANCHES = {"reduce": "branch2a", "conv3x3": "branch2b", "increase": "branch2c",
            "shortcut": "branch1"}
STEM = re.compile(r"^(?P<prefix>(base\.)?)layer1\.conv1\.(?P<rest>(conv|bn)\..+)$")
BLOCK = re.compile(r"^(?P<prefix>(base\.)?)layer(?P<stage>[2-5])\.block(?P<k>[1-9]\d*)\."
                   r"(?P<part>reduce|conv3x3|increase|shortcut)\.(?P<rest>(conv|bn)\..+)$")
ASPP = re.compile(r"^(?P<prefix>(base\.)?)aspp\.(?P<rest>c\d+\.(weight|bias))$")
COUNTER = "num_batches_tracked"


def is_released(state_dict):
    """Whether ``state_dict``'s keys are in the released layout (``[base.]layerN.``)."""
    return any(STEM.match(k) or BLOCK.match(k) for k in state_dict)


def stage_depths(keys):
    """The number of blocks of each stage (2..5) that the keys mention."""
    depth = defaultdict(int)
    for key in keys:
        m = BLOCK.match(key)
        if m:
            stage = int(m["stage"])
            depth[stage] = max(depth[stage], int(m["k"]))
    return depth


def our_key(key, depth):
    """Our name for the released key ``key``, or None if the rule does not cover it."""
    m = STEM.match(key)
    if m:
        return f"{m['prefix']}backbone.conv1.{m['rest']}"
    m = BLOCK.match(key)
    if m:
        stage = int(m["stage"])
        block = block_names(depth[stage])[int(m["k"]) - 1]
        return f"{m['prefix']}backbone.res{stage}.{block}.{BRANCHES[m['part']]}.{m['rest']}"
    m = ASPP.match(key)
    if m:
        return f"{m['prefix']}aspp.{m['rest']}"
    return None


def from_released(state_dict):
    """``(our state dict, keys the rule does not cover)`` for a released-layout state dict."""
    depth = stage_depths(state_dict)
    mapped, unknown = {}, []
    for key, value in state_dict.items():
        new = our_key(key, depth)
        if new is None:
            unknown.append(key)
        else:
            mapped[new] = value
    for key in list(mapped):
        if key.endswith(".bn.running_mean"):
            counter = key[: -len("running_mean")] + COUNTER
            mapped.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return mapped, unknown
