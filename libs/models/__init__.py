"""The networks: ResNet-101 backbone, DeepLab v2, MSC, and their builders.

``build_model(model_cfg, n_classes)`` builds what a config's ``MODEL`` section
describes; every architectural number then comes from the YAML. The one
exception is the builder named after the paper's model,
:func:`DeepLabV2_ResNet101_MSC`, whose defaults *are* the paper's architecture
(as torchvision's named builders): that function is their only home, and the
classes under it take required arguments.
"""

from ..utils.config import ConfigValueError
from .deeplabv2 import ASPP, DeepLabV2
from .geometry import MSC_GEOMETRIES
from .msc import MSC
from .resnet import FrozenBatchNorm2d, ResNetBackbone


class ModelError(ConfigValueError):
    """A model the config asks for that does not exist (``MODEL.NAME``)."""


def DeepLabV2_ResNet101_MSC(
    n_classes,
    n_blocks=(3, 4, 23, 3),
    atrous_rates=(6, 12, 18, 24),
    msc_scales=(0.5, 0.75),
    base_width=64,
    msc_geometry="caffe",
):
    """DeepLab v2 as published: ResNet-101, ASPP rates 6/12/18/24, MSC at 0.5x and 0.75x.

    ``.base`` is the single-scale network. ``n_blocks`` and ``base_width``
    shrink it for tests and the quick start; ``msc_geometry="pytorch"`` runs
    weights trained by the original repository's later releases as they ran
    there (``geometry.py``).
    """
    base = DeepLabV2(n_classes, n_blocks, atrous_rates, base_width)
    return MSC(base, msc_scales, msc_geometry)


MODELS = {"DeepLabV2_ResNet101_MSC": DeepLabV2_ResNet101_MSC}


def build_model(model_cfg, n_classes):
    """The model a config's ``MODEL`` section describes, for ``n_classes`` classes."""
    try:
        builder = MODELS[model_cfg.NAME]
    except KeyError:
        raise ModelError(
            f"unknown MODEL.NAME {model_cfg.NAME!r}; choose one of {sorted(MODELS)}"
        ) from None
    if model_cfg.MSC_GEOMETRY not in MSC_GEOMETRIES:
        raise ModelError(f"MODEL.MSC_GEOMETRY: unknown geometry {model_cfg.MSC_GEOMETRY!r}; "
                         f"choose one of {list(MSC_GEOMETRIES)}")
    return builder(
        n_classes,
        n_blocks=tuple(model_cfg.N_BLOCKS),
        atrous_rates=tuple(model_cfg.ATROUS_RATES),
        msc_scales=tuple(model_cfg.MSC_SCALES),
        base_width=model_cfg.BASE_WIDTH,
        msc_geometry=model_cfg.MSC_GEOMETRY,
    )


__all__ = [
    "ASPP",
    "DeepLabV2",
    "DeepLabV2_ResNet101_MSC",
    "FrozenBatchNorm2d",
    "MODELS",
    "MSC",
    "ModelError",
    "ResNetBackbone",
    "build_model",
]
