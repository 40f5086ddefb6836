"""The SGD optimizer of DeepLab and its three parameter groups (v2's rule, extended to v3/v3+)."""

import torch

GROUP_NAMES = ("backbone", "head_weights", "head_biases")


def parameter_groups(model, solver):
    """SGD groups: backbone 1x, head weights 10x, head biases 20x (the DeepLab v2 rule). The
    backbone is ``model.base.backbone``; every other trainable parameter is head (v2's ASPP, v3's
    ASPP and classifier, v3+'s decoder; a trainable BatchNorm's scale with the weights, its shift
    with the biases). Frozen parameters belong to no group. Head biases get no weight decay, as in
    the Caffe solver. Within a group the parameters keep the model's order."""
    mult, decay = solver.LR_MULT, solver.WEIGHT_DECAY
    in_backbone = {id(p) for p in model.base.backbone.parameters()}
    groups = {name: [] for name in GROUP_NAMES}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in in_backbone:
            groups["backbone"].append(param)
        else:
            groups["head_biases" if name.endswith(".bias") else "head_weights"].append(param)
    settings = {"backbone": (mult.BACKBONE, decay), "head_weights": (mult.ASPP_WEIGHT, decay),
                "head_biases": (mult.ASPP_BIAS, 0.0)}
    return [{"name": name, "params": groups[name], "lr": solver.LR * settings[name][0],
             "lr_mult": settings[name][0], "weight_decay": settings[name][1]}
            for name in GROUP_NAMES]


def build_optimizer(model, solver):
    """SGD with momentum over :func:`parameter_groups`, from the ``SOLVER`` section."""
    return torch.optim.SGD(parameter_groups(model, solver), lr=solver.LR, momentum=solver.MOMENTUM)
