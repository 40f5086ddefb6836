"""Shared fixtures: a small synthetic COCO-Stuff-10k-layout dataset and a tiny toy config.

Other test modules use ``synthetic_root`` (a path) and ``toy_cfg`` (an unfrozen
``addict.Dict``) so that nothing in the suite needs the real data or weights.
"""

from pathlib import Path

import pytest
from addict import Dict

from libs.datasets.synthetic import Sizes, generate_synthetic
from libs.utils.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[1]

# Small enough to generate in well under a second, big enough for batches and crops.
SYNTHETIC_N_TRAIN = 12
SYNTHETIC_N_TEST = 4
SYNTHETIC_HEIGHT = 64
SYNTHETIC_WIDTH = 80
SYNTHETIC_SEED = 0
# Tiny network inputs: a 49 crop gives 7x7 logits, a 65 warp gives 9x9.
TOY_CROP = 49
TOY_TEST_SIZE = 65


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` on a machine without a CUDA GPU (``-m cuda`` selects them)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models run faster so, and far faster on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Root of a 12-train / 4-test synthetic dataset of 64x80 images (read-only: share it)."""
    root = tmp_path_factory.mktemp("synthetic") / "synthetic"
    sizes = Sizes(SYNTHETIC_N_TRAIN, SYNTHETIC_N_TEST, SYNTHETIC_HEIGHT, SYNTHETIC_WIDTH)
    return generate_synthetic(root, sizes, seed=SYNTHETIC_SEED)


@pytest.fixture
def toy_cfg(synthetic_root, tmp_path):
    """``config/toy.yaml`` as an unfrozen Dict, pointed at ``synthetic_root`` with tiny sizes.

    Checkpoints and TensorBoard logs go under this test's ``tmp_path``; the model is
    the tiny ``n_blocks=(1,1,1,1)`` DeepLab with no initial weights.
    """
    cfg = Dict(load_config(REPO_ROOT / "config" / "toy.yaml").to_dict())
    cfg.EXP.OUTPUT_DIR = str(tmp_path / "models")
    cfg.EXP.LOG_DIR = str(tmp_path / "runs")
    cfg.EXP.SEED = SYNTHETIC_SEED
    cfg.DATASET.ROOT = str(synthetic_root)
    cfg.DATASET.LABELS = str(REPO_ROOT / "data" / "synthetic-labels.txt")
    cfg.DATASET.SYNTHETIC = Dict(
        N_TRAIN=SYNTHETIC_N_TRAIN,
        N_TEST=SYNTHETIC_N_TEST,
        HEIGHT=SYNTHETIC_HEIGHT,
        WIDTH=SYNTHETIC_WIDTH,
    )
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.IMAGE.SIZE.TRAIN = TOY_CROP
    cfg.IMAGE.SIZE.TEST = TOY_TEST_SIZE
    cfg.IMAGE.SIZE.DEMO = TOY_TEST_SIZE
    cfg.MODEL.BACKBONE.N_BLOCKS = [1, 1, 1, 1]
    cfg.MODEL.INIT_MODEL = None
    cfg.SOLVER.BATCH_SIZE.TRAIN = 2
    cfg.SOLVER.BATCH_SIZE.TEST = 1
    cfg.SOLVER.ITER_SIZE = 1
    cfg.SOLVER.ITER_MAX = 4
    cfg.SOLVER.ITER_SNAP = 2
    cfg.SOLVER.ITER_TB = 2
    return cfg
