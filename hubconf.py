"""torch.hub entry point: ``torch.hub.load("<owner>/<repo>", "deeplabv2_resnet101", ...)``.

Kept at the repository root because that is where torch.hub looks for it; the
model and the weights loader live in ``libs.models``, so the hub gets exactly
what eval.py and demo.py build and read.
"""

# Modules torch.hub checks for before importing this file (what libs.models imports).
dependencies = ["torch", "numpy", "yaml", "addict"]

from libs.models import DeepLabV2_ResNet101_MSC  # noqa: E402
from libs.models.weights import load_model_weights  # noqa: E402


def deeplabv2_resnet101(pretrained=None, n_classes=182, **kwargs):
    """DeepLab v2 (ResNet-101, ASPP, MSC) in eval mode; ``.base`` is the single-scale network.

    ``pretrained``: None (the paper's initialisation, untrained), one of the
    released checkpoints' names ``"cocostuff10k"`` and ``"cocostuff164k"``
    (182 classes) or ``"voc12"`` (21 classes), downloaded once into the torch
    hub cache, or a local weight file in any format this repository reads.
    A name with another ``n_classes`` is an error before any download.
    ``kwargs`` go to :func:`DeepLabV2_ResNet101_MSC` (e.g. ``msc_scales``);
    released weights set the MSC geometry they were trained with.
    """
    model = DeepLabV2_ResNet101_MSC(n_classes, **kwargs)
    if pretrained is not None:
        load_model_weights(model, pretrained, n_classes)
    return model.eval()
