"""A narrow DeepLab and its config on disk, for the script tests (demo, uvcdemo)."""

from pathlib import Path

import torch
import yaml

from libs.models import build_model
from libs.utils.atomic import save_torch


def tiny_setup(cfg, folder, n_classes=None, seed=0):
    """Write ``cfg`` (made narrow) as YAML and a random-init checkpoint for it into ``folder``.

    ``n_classes`` gives the checkpoint another class count than the config, for
    the wrong-class-count errors. Returns ``(config path, checkpoint path)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    config_path = folder / "toy.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    model_cfg = cfg.deepcopy()
    if n_classes is not None:
        model_cfg.DATASET.N_CLASSES = n_classes
    torch.manual_seed(seed)
    checkpoint = folder / ("tiny.pth" if n_classes is None else f"tiny_{n_classes}.pth")
    model = build_model(model_cfg.MODEL, model_cfg.DATASET.N_CLASSES)
    save_torch({"model": model.state_dict(), "iteration": 0}, checkpoint)
    return config_path, checkpoint


def narrow(cfg, base_width=8, **solver):
    """``cfg`` with a narrow, randomly initialised model and the given SOLVER values (in place).

    Each training iteration then takes a fraction of a second on the CPU.
    """
    cfg.MODEL.BACKBONE.BASE_WIDTH = base_width
    cfg.MODEL.INIT_MODEL = None
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def randomised_model(geometry="caffe", n_classes=5, seed=0):
    """A tiny MSC model in eval mode whose frozen BatchNorms are far from the identity.

    Folding BatchNorm (inference preparation, ONNX export) must then really
    change the weights, so a mistake in it shows in the logits.
    """
    import torch.nn as nn

    from libs.models import DeepLabV2_ResNet101_MSC

    torch.manual_seed(seed)
    model = DeepLabV2_ResNet101_MSC(n_classes, n_blocks=(1, 1, 1, 1), base_width=8,
                                    msc_geometry=geometry)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.3, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    for conv in model.base.aspp.values():
        conv.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


def random_batch(n_classes, n=2, size=49, seed=0):
    """One training iteration's sub-batches: random images and labels, some pixels ignored."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=generator)
    labels = torch.randint(0, n_classes, (n, size, size), generator=generator)
    labels[0, :10] = 255
    return [(["a"] * n, images, labels)]
