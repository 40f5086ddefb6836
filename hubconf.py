"""torch.hub entry points: ``torch.hub.load("<owner>/<repo>", "deeplabv2_resnet101", ...)``.

Also ``deeplabv3_resnet101`` and ``deeplabv3plus_resnet101`` (no released weights). At the
repository root because torch.hub looks there; the model and the weights loader are in
``libs.models``, so the hub gets exactly what eval.py and demo.py build and read.
"""

# Modules torch.hub checks for before importing this file (what libs.models imports).
dependencies = ["torch", "numpy", "yaml", "addict"]

from libs.models import (DeepLabV2_ResNet101_MSC, DeepLabV3_ResNet101,  # noqa: E402
                         DeepLabV3Plus_ResNet101)
from libs.models.weights import load_model_weights  # noqa: E402


def _build(builder, pretrained, n_classes, kwargs):
    model = builder(n_classes, **kwargs)
    if pretrained is not None:
        load_model_weights(model, pretrained, n_classes)
    return model.eval()


def deeplabv2_resnet101(pretrained=None, n_classes=182, **kwargs):
    """DeepLab v2 (ResNet-101, ASPP, MSC) in eval mode; ``.base`` is the single-scale network.

    ``pretrained``: None (untrained), a released checkpoint's name (``"cocostuff10k"``,
    ``"cocostuff164k"``: 182 classes; ``"voc12"``: 21), downloaded once into the torch hub cache
    and refused before the download for another ``n_classes``, or a local weight file of any format
    this repository reads. ``kwargs`` go to :func:`DeepLabV2_ResNet101_MSC` (e.g. ``msc_scales``);
    released weights set the MSC geometry they were trained with.
    """
    return _build(DeepLabV2_ResNet101_MSC, pretrained, n_classes, kwargs)


def deeplabv3_resnet101(pretrained=None, n_classes=182, **kwargs):
    """DeepLab v3 (ResNet-101, output stride 16, multi-grid 1/2/4) in eval mode; untrained.

    ``pretrained``: None or a local weight file of this model (train.py's checkpoints, a state
    dict); there are no released v3 weights, and a released v2 name is an error before any
    download. ``kwargs`` go to :func:`DeepLabV3_ResNet101` (e.g. ``output_stride=8,
    atrous_rates=(12, 24, 36)``).
    """
    return _build(DeepLabV3_ResNet101, pretrained, n_classes, kwargs)


def deeplabv3plus_resnet101(pretrained=None, n_classes=182, **kwargs):
    """DeepLab v3+ (ResNet-101, regular convolutions, OS16, decoder on res2), eval mode, untrained.

    ``pretrained`` as for :func:`deeplabv3_resnet101`; ``kwargs`` go to
    :func:`DeepLabV3Plus_ResNet101`.
    """
    return _build(DeepLabV3Plus_ResNet101, pretrained, n_classes, kwargs)


def segmenter(config="config/cocostuff164k.yaml", pretrained="cocostuff164k", crf=False,
              device="cpu"):
    """Images in, label maps out: ``segmenter(image_bgr)`` is the HxW class indices at the
    image's size (``rgb=True`` for RGB, ``probabilities=True`` for the CxHxW probabilities too).

    ``config``: a YAML file, relative to this repository or absolute; ``pretrained``: weights as
    for :func:`deeplabv2_resnet101`; ``crf``: refine with the config's dense CRF. It is
    :class:`libs.inference.segmenter.Segmenter`, what demo.py and predict.py run.
    """
    from pathlib import Path

    from libs.inference.segmenter import Segmenter
    from libs.utils.config import load_config

    cfg = load_config(Path(__file__).resolve().parent / config)
    return Segmenter.from_config(cfg, pretrained, device, crf)
