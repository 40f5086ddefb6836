"""The networks: backbones (``backbone.py``), DeepLab v2, v3 and v3+, MSC, and their builders.

``build_model(model_cfg, n_classes)`` builds what a config's ``MODEL`` section describes, so
every architectural number comes from the YAML; only the builders named after the papers' models
(as torchvision's) have defaults, :data:`PAPERS`. The classes under them take required arguments.
"""

from ..utils.config import MODEL_KEYS, foreign_model_key
from ..utils.errors import ConfigError
from .backbone import BACKBONES
from .deeplabv2 import DeepLabV2
from .deeplabv3 import DeepLabV3, DeepLabV3Plus
from .geometry import MSC_GEOMETRIES
from .msc import MSC
from .resnet import batchnorm_class


HEADS = {"DeepLabV2_ResNet101_MSC": DeepLabV2, "DeepLabV3_ResNet101": DeepLabV3,
         "DeepLabV3Plus_ResNet101": DeepLabV3Plus}
# The papers' architectures, as keyword options of the named builders. At output stride 8
# the v3 paper doubles the rates: output_stride=8, atrous_rates=(12, 24, 36).
COMMON = dict(backbone="resnet101_caffe", n_blocks=(3, 4, 23, 3), base_width=64,
              backbone_bn="frozen", msc_geometry="caffe")
V3 = dict(COMMON, atrous_rates=(6, 12, 18), msc_scales=(), output_stride=16,
          multi_grid=(1, 2, 4), head_channels=256, head_bn="train")
PAPERS = {
    "DeepLabV2_ResNet101_MSC": dict(COMMON, atrous_rates=(6, 12, 18, 24), msc_scales=(0.5, 0.75)),
    "DeepLabV3_ResNet101": V3,
    "DeepLabV3Plus_ResNet101": dict(V3, decoder_channels=48),
}
HEAD_OPTIONS = ("head_channels", "decoder_channels", "head_bn")


def assemble(name, n_classes, options):
    """The :class:`MSC` model ``name`` from ``options`` (keys as in :data:`PAPERS`).

    The backbone is built first, at the head's output stride; a value it or the head cannot
    take is one :class:`ConfigError` line.
    """
    if options["backbone"] not in BACKBONES:
        raise ConfigError(f"unknown MODEL.BACKBONE.NAME {options['backbone']!r}; "
                         f"choose one of {sorted(BACKBONES)}", loaded=True)
    if options["msc_geometry"] not in MSC_GEOMETRIES:
        raise ConfigError(f"MODEL.MSC.GEOMETRY: unknown geometry {options['msc_geometry']!r}; "
                         f"choose one of {list(MSC_GEOMETRIES)}", loaded=True)
    try:
        backbone = BACKBONES[options["backbone"]](
            n_blocks=tuple(options["n_blocks"]), base_width=options["base_width"],
            norm=batchnorm_class(options["backbone_bn"]),
            output_stride=options.get("output_stride", 8),
            multi_grid=tuple(options.get("multi_grid", (1,))))
        head = {key: options[key] for key in HEAD_OPTIONS if key in options}
        base = HEADS[name](backbone, n_classes, tuple(options["atrous_rates"]), **head)
    except ValueError as e:
        raise ConfigError(f"MODEL ({name}): {e}", loaded=True) from None
    return MSC(base, options["msc_scales"], options["msc_geometry"])


def paper_model(name, n_classes, options):
    """The named builder ``name`` with ``options`` over its paper's defaults."""
    unknown = sorted(set(options) - set(PAPERS[name]))
    if unknown:
        raise TypeError(f"{name}() got an unexpected keyword argument {unknown[0]!r}")
    return assemble(name, n_classes, {**PAPERS[name], **options})


def DeepLabV2_ResNet101_MSC(n_classes, **options):
    """DeepLab v2 as published: ResNet-101, ASPP rates 6/12/18/24, MSC at 0.5x and 0.75x.

    ``.base`` is the single-scale network. ``options`` (:data:`PAPERS`) change it: ``n_blocks``
    and ``base_width`` shrink it for tests and the quick start; ``msc_geometry="pytorch"`` runs
    weights of the original repository's later releases as they ran there (``geometry.py``).
    """
    return paper_model("DeepLabV2_ResNet101_MSC", n_classes, options)


def DeepLabV3_ResNet101(n_classes, **options):
    """DeepLab v3 as published: output stride 16, multi-grid (1, 2, 4), ASPP rates 6/12/18.

    Wrapped in :class:`MSC` like v2 (``msc_scales=()``: single scale), so every script handles
    it alike; ``.base`` is the single-scale network.
    """
    return paper_model("DeepLabV3_ResNet101", n_classes, options)


def DeepLabV3Plus_ResNet101(n_classes, **options):
    """DeepLab v3+ on the ResNet-101 (regular convolutions): v3 encoder at OS16, decoder 48/256.

    Logits at stride 4; wrapped in :class:`MSC` as v2 and v3 (``msc_scales=()``: single scale).
    """
    return paper_model("DeepLabV3Plus_ResNet101", n_classes, options)


def build_model(model_cfg, n_classes):
    """The model a config's ``MODEL`` section describes, for ``n_classes`` classes.

    Every model is an :class:`MSC` around its single-scale network (``.base``, whose
    ``.backbone`` is the backbone); an empty ``MSC.SCALES`` is single scale. The model-specific
    keys (``MODEL_KEYS``) are its arguments of the same name, lower-cased.
    """
    if model_cfg.NAME not in HEADS:
        raise ConfigError(f"unknown MODEL.NAME {model_cfg.NAME!r}; choose one of {sorted(HEADS)}",
                          loaded=True)
    foreign = foreign_model_key(model_cfg)
    if foreign:
        raise ConfigError(foreign, loaded=True)
    backbone, msc = model_cfg.BACKBONE, model_cfg.MSC
    options = dict(backbone=backbone.NAME, n_blocks=backbone.N_BLOCKS, backbone_bn=backbone.BN,
                   base_width=backbone.BASE_WIDTH, atrous_rates=model_cfg.ATROUS_RATES,
                   msc_scales=msc.SCALES, msc_geometry=msc.GEOMETRY)
    options.update({key.lower(): model_cfg[key] for key in MODEL_KEYS.get(model_cfg.NAME, ())})
    return assemble(model_cfg.NAME, n_classes, options)

