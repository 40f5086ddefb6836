"""The SGD optimizer of DeepLab and its three parameter groups (v2's rule, extended to v3/v3+)."""

import torch


def parameter_groups(model, solver):
    """SGD groups, the DeepLab v2 rule: backbone (``model.base.backbone``) 1x, head weights 10x,
    head biases 20x without weight decay (as the Caffe solver). A trainable BatchNorm's scale is a
    weight, its shift a bias; frozen parameters join no group; groups keep the model's order."""
    mult, decay = solver.LR_MULT, solver.WEIGHT_DECAY
    settings = {"backbone": (mult.BACKBONE, decay), "head_weights": (mult.ASPP_WEIGHT, decay),
                "head_biases": (mult.ASPP_BIAS, 0.0)}  # (lr_mult, weight_decay)
    in_backbone = {id(p) for p in model.base.backbone.parameters()}
    groups = {name: [] for name in settings}
    for name, param in model.named_parameters():
        if param.requires_grad:
            head = "head_biases" if name.endswith(".bias") else "head_weights"
            groups["backbone" if id(param) in in_backbone else head].append(param)
    return [{"name": name, "params": groups[name], "lr": solver.LR * lr_mult, "lr_mult": lr_mult,
             "weight_decay": weight_decay} for name, (lr_mult, weight_decay) in settings.items()]


def build_optimizer(model, solver):
    """SGD with momentum over :func:`parameter_groups`, from the ``SOLVER`` section."""
    return torch.optim.SGD(parameter_groups(model, solver), lr=solver.LR, momentum=solver.MOMENTUM)
