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
    cfg.MODEL.BASE_WIDTH = 8
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
