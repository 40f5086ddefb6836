"""Model builders. ``build_model(cfg)`` is what the scripts use."""

from .deeplabv2 import ASPP, DeepLabV2
from .msc import MSC
from .resnet import FrozenBatchNorm2d, ResNetBackbone

RESNET101_BLOCKS = (3, 4, 23, 3)
DEEPLABV2_RATES = (6, 12, 18, 24)
MSC_SCALES = (0.5, 0.75)


def DeepLabV2_ResNet101_MSC(
    n_classes,
    n_blocks=RESNET101_BLOCKS,
    atrous_rates=DEEPLABV2_RATES,
    scales=MSC_SCALES,
    base_width=64,
):
    """DeepLab v2 with a ResNet-101 backbone wrapped in MSC; ``.base`` is single-scale.

    ``n_blocks`` and ``base_width`` shrink the network for tests and the quick start.
    """
    return MSC(DeepLabV2(n_classes, n_blocks, atrous_rates, base_width), scales)


MODELS = {"DeepLabV2_ResNet101_MSC": DeepLabV2_ResNet101_MSC}


def build_model(cfg):
    """Build the model that ``cfg.MODEL`` describes, for ``cfg.DATASET.N_CLASSES`` classes."""
    try:
        builder = MODELS[cfg.MODEL.NAME]
    except KeyError:
        raise ValueError(
            f"unknown MODEL.NAME {cfg.MODEL.NAME!r}; choose one of {sorted(MODELS)}"
        ) from None
    return builder(
        cfg.DATASET.N_CLASSES,
        n_blocks=tuple(cfg.MODEL.N_BLOCKS),
        atrous_rates=tuple(cfg.MODEL.ATROUS_RATES),
        scales=tuple(cfg.MODEL.MSC_SCALES),
        base_width=cfg.MODEL.BASE_WIDTH,
    )


__all__ = [
    "ASPP",
    "DeepLabV2",
    "DeepLabV2_ResNet101_MSC",
    "FrozenBatchNorm2d",
    "MSC",
    "ResNetBackbone",
    "build_model",
]
