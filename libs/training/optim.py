"""The SGD optimizer of DeepLab and its three parameter groups (v2's rule, extended to v3/v3+)."""

import torch

from ..models.resnet import ResNetBackbone

# The names stay v2's (logs, TensorBoard and tests read them); "aspp" means the whole head.
GROUP_NAMES = ("backbone", "aspp_weight", "aspp_bias")


def backbone_parameter_ids(model):
    """``id()`` of every parameter inside a ResNet backbone of ``model``."""
    return {id(p) for m in model.modules() if isinstance(m, ResNetBackbone)
            for p in m.parameters()}


def parameter_groups(model, solver):
    """SGD groups: backbone 1x, head weights 10x, head biases 20x (the DeepLab v2 rule).

    ``solver`` is the config's ``SOLVER`` section (``LR``, ``LR_MULT``,
    ``WEIGHT_DECAY``). The backbone is the ``ResNetBackbone``; the head is
    everything else: v2's ASPP, v3's ASPP (with its projection) and classifier,
    v3+'s decoder. Frozen parameters (``requires_grad=False``: the frozen
    BatchNorms) belong to no group. A trainable head BatchNorm (v3/v3+) counts
    as head: its scale with the weights (10x, decayed), its shift with the
    biases (20x, no decay), as a convolution's bias. Head biases get no weight
    decay, as in the Caffe solver. The group names keep v2's ``aspp_*``.
    """
    mult, decay = solver.LR_MULT, solver.WEIGHT_DECAY
    groups = {name: [] for name in GROUP_NAMES}
    in_backbone = backbone_parameter_ids(model)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in in_backbone:
            groups["backbone"].append(param)
        else:
            groups["aspp_bias" if name.endswith(".bias") else "aspp_weight"].append(param)
    settings = {
        "backbone": (mult.BACKBONE, decay),
        "aspp_weight": (mult.ASPP_WEIGHT, decay),
        "aspp_bias": (mult.ASPP_BIAS, 0.0),
    }
    return [
        {
            "name": name,
            "params": groups[name],
            "lr": solver.LR * settings[name][0],
            "lr_mult": settings[name][0],
            "weight_decay": settings[name][1],
        }
        for name in GROUP_NAMES
    ]


def build_optimizer(model, solver):
    """SGD with momentum over :func:`parameter_groups`, from the ``SOLVER`` section."""
    return torch.optim.SGD(
        parameter_groups(model, solver), lr=solver.LR, momentum=solver.MOMENTUM
    )
