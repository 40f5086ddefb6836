"""The SGD optimizer of DeepLab v2 and its three parameter groups."""

import torch

GROUP_NAMES = ("backbone", "aspp_weight", "aspp_bias")


def parameter_groups(model, solver):
    """SGD groups of DeepLab v2: backbone weights 1x, ASPP weights 10x, ASPP biases 20x.

    ``solver`` is the config's ``SOLVER`` section (``LR``, ``LR_MULT``,
    ``WEIGHT_DECAY``). BatchNorm parameters are frozen (``requires_grad=False``)
    and so belong to no group. ASPP biases get no weight decay, as in the Caffe
    solver.
    """
    mult, decay = solver.LR_MULT, solver.WEIGHT_DECAY
    groups = {name: [] for name in GROUP_NAMES}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if ".aspp." in f".{name}":
            groups["aspp_bias" if name.endswith(".bias") else "aspp_weight"].append(param)
        else:
            groups["backbone"].append(param)
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
