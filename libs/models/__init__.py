"""The networks: ResNet-101 backbone, DeepLab v2, v3 and v3+, MSC, and their builders.

``build_model(model_cfg, n_classes)`` builds what a config's ``MODEL`` section
describes; every architectural number then comes from the YAML. The
exceptions are the builders named after the papers' models,
:func:`DeepLabV2_ResNet101_MSC`, :func:`DeepLabV3_ResNet101` and
:func:`DeepLabV3Plus_ResNet101`, whose defaults *are* the papers' architectures
(as torchvision's named builders): those functions are their only home, and
the classes under them take required arguments.
"""

from ..utils.config import ConfigValueError
from .deeplabv2 import ASPP, DeepLabV2
from .deeplabv3 import ASPPV3, DeepLabV3, DeepLabV3Plus
from .geometry import MSC_GEOMETRIES
from .msc import MSC
from .resnet import BATCHNORMS, FrozenBatchNorm2d, ResNetBackbone


class ModelError(ConfigValueError):
    """A model the config asks for that does not exist or cannot be built (``MODEL.*``)."""


def DeepLabV2_ResNet101_MSC(
    n_classes,
    n_blocks=(3, 4, 23, 3),
    atrous_rates=(6, 12, 18, 24),
    msc_scales=(0.5, 0.75),
    base_width=64,
    msc_geometry="caffe",
    backbone_bn="frozen",
):
    """DeepLab v2 as published: ResNet-101, ASPP rates 6/12/18/24, MSC at 0.5x and 0.75x.

    ``.base`` is the single-scale network. ``n_blocks`` and ``base_width``
    shrink it for tests and the quick start; ``msc_geometry="pytorch"`` runs
    weights trained by the original repository's later releases as they ran
    there (``geometry.py``). ``backbone_bn="train"`` lets its BatchNorm learn.
    """
    base = DeepLabV2(n_classes, n_blocks, atrous_rates, base_width, backbone_bn)
    return MSC(base, msc_scales, msc_geometry)


def DeepLabV3_ResNet101(
    n_classes,
    n_blocks=(3, 4, 23, 3),
    atrous_rates=(6, 12, 18),
    msc_scales=(),
    base_width=64,
    msc_geometry="caffe",
    output_stride=16,
    multi_grid=(1, 2, 4),
    head_channels=256,
    backbone_bn="frozen",
    head_bn="train",
):
    """DeepLab v3 as published: output stride 16, multi-grid (1, 2, 4), ASPP rates 6/12/18.

    At ``output_stride=8`` the paper doubles the rates: pass ``(12, 24, 36)``.
    Wrapped in :class:`MSC` like v2 (``msc_scales=()``: single scale), so
    every script handles it alike; ``.base`` is the single-scale network.
    """
    base = DeepLabV3(n_classes, n_blocks, atrous_rates, base_width, output_stride, multi_grid,
                     head_channels, backbone_bn, head_bn)
    return MSC(base, msc_scales, msc_geometry)


def DeepLabV3Plus_ResNet101(
    n_classes,
    n_blocks=(3, 4, 23, 3),
    atrous_rates=(6, 12, 18),
    msc_scales=(),
    base_width=64,
    msc_geometry="caffe",
    output_stride=16,
    multi_grid=(1, 2, 4),
    head_channels=256,
    decoder_channels=48,
    backbone_bn="frozen",
    head_bn="train",
):
    """DeepLab v3+ on the ResNet-101 (regular convolutions): v3 encoder at OS16, decoder 48/256.

    Logits at stride 4; wrapped in :class:`MSC` as v2 and v3 (``msc_scales=()``: single scale).
    """
    base = DeepLabV3Plus(n_classes, n_blocks, atrous_rates, base_width, output_stride,
                         multi_grid, head_channels, decoder_channels, backbone_bn, head_bn)
    return MSC(base, msc_scales, msc_geometry)


MODELS = {
    "DeepLabV2_ResNet101_MSC": DeepLabV2_ResNet101_MSC,
    "DeepLabV3_ResNet101": DeepLabV3_ResNet101,
    "DeepLabV3Plus_ResNet101": DeepLabV3Plus_ResNet101,
}

# The MODEL keys each builder reads (config key -> argument); the others do not apply to it
# (v2 has no head BatchNorm, no decoder, and is output stride 8 by definition).
COMMON_KEYS = {"N_BLOCKS": "n_blocks", "ATROUS_RATES": "atrous_rates",
               "MSC_SCALES": "msc_scales", "BASE_WIDTH": "base_width",
               "MSC_GEOMETRY": "msc_geometry", "BACKBONE_BN": "backbone_bn"}
V3_KEYS = {**COMMON_KEYS, "OUTPUT_STRIDE": "output_stride", "MULTI_GRID": "multi_grid",
           "HEAD_CHANNELS": "head_channels", "HEAD_BN": "head_bn"}
MODEL_KEYS = {
    "DeepLabV2_ResNet101_MSC": COMMON_KEYS,
    "DeepLabV3_ResNet101": V3_KEYS,
    "DeepLabV3Plus_ResNet101": {**V3_KEYS, "DECODER_CHANNELS": "decoder_channels"},
}


def check_model_cfg(model_cfg):
    """The checks a builder's ValueError would make less clear: names, geometry, v2's stride."""
    if model_cfg.NAME not in MODELS:
        raise ModelError(f"unknown MODEL.NAME {model_cfg.NAME!r}; choose one of {sorted(MODELS)}")
    if model_cfg.MSC_GEOMETRY not in MSC_GEOMETRIES:
        raise ModelError(f"MODEL.MSC_GEOMETRY: unknown geometry {model_cfg.MSC_GEOMETRY!r}; "
                         f"choose one of {list(MSC_GEOMETRIES)}")
    if "OUTPUT_STRIDE" not in MODEL_KEYS[model_cfg.NAME] and model_cfg.OUTPUT_STRIDE != 8:
        raise ModelError(f"MODEL.OUTPUT_STRIDE: {model_cfg.NAME} has output stride 8, "
                         f"got {model_cfg.OUTPUT_STRIDE}")
    for key in ("BACKBONE_BN", "HEAD_BN"):
        if model_cfg[key] not in BATCHNORMS:
            raise ModelError(f"MODEL.{key}: {model_cfg[key]!r}; choose one of {list(BATCHNORMS)}")


def build_model(model_cfg, n_classes):
    """The model a config's ``MODEL`` section describes, for ``n_classes`` classes.

    Every model is an :class:`MSC` around its single-scale network (``.base``);
    an empty ``MSC_SCALES`` is single scale. A value the network cannot take
    (an output stride other than 8 or 16, a non-positive width) is one
    :class:`ModelError` line naming the key.
    """
    check_model_cfg(model_cfg)
    keys = MODEL_KEYS[model_cfg.NAME]
    kwargs = {arg: model_cfg[key] for key, arg in keys.items()}
    for arg in ("n_blocks", "atrous_rates", "msc_scales", "multi_grid"):
        if arg in kwargs:
            kwargs[arg] = tuple(kwargs[arg])
    try:
        return MODELS[model_cfg.NAME](n_classes, **kwargs)
    except ValueError as e:
        raise ModelError(f"MODEL ({model_cfg.NAME}): {e}") from None


__all__ = [
    "ASPP",
    "ASPPV3",
    "DeepLabV2",
    "DeepLabV2_ResNet101_MSC",
    "DeepLabV3",
    "DeepLabV3Plus",
    "DeepLabV3Plus_ResNet101",
    "DeepLabV3_ResNet101",
    "FrozenBatchNorm2d",
    "MODELS",
    "MODEL_KEYS",
    "MSC",
    "ModelError",
    "ResNetBackbone",
    "build_model",
]
