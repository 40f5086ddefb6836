"""torch.hub: hubconf.py loads every weight format; named weights download into the hub cache.

The download is tested without the internet: a local HTTP server on 127.0.0.1
serves a released-format file, and the URL table points at it.
"""

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.models.test_weights import released_reference, save_released

from libs.models import DeepLabV2_ResNet101_MSC, zoo
from libs.models.weights import load_model_weights, read_weights
from libs.utils.errors import CheckpointError
from libs.utils.atomic import save_torch

REPO = Path(__file__).resolve().parents[2]
TINY = dict(n_blocks=(1, 1, 1, 1), base_width=8)
FILE_NAME = "deeplabv2_resnet101_msc-vocaug-20000.pth"


def hub_model(pretrained, n_classes=3, **kwargs):
    return torch.hub.load(str(REPO), "deeplabv2_resnet101", source="local",
                          pretrained=pretrained, n_classes=n_classes, **TINY, **kwargs)


def ours_and_files(folder):
    torch.manual_seed(3)
    model = DeepLabV2_ResNet101_MSC(3, **TINY)
    save_torch({"model": model.state_dict(), "iteration": 5}, folder / "train.pth")
    save_torch(model.state_dict(), folder / "converted.pth")
    return model


@pytest.mark.parametrize("name", ["train.pth", "converted.pth"])
def test_hub_loads_this_repositorys_formats(tmp_path, name):
    donor = ours_and_files(tmp_path)
    model = hub_model(str(tmp_path / name))
    assert not model.training and model.geometry == "caffe"
    for key, value in donor.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_hub_loads_a_released_file(tmp_path):
    reference = released_reference(n_blocks=TINY["n_blocks"])
    path = save_released(reference, tmp_path / "released.pth", counters=False)
    model = hub_model(str(path))
    assert model.geometry == "pytorch" and isinstance(model.base, torch.nn.Module)
    x = torch.randn(1, 3, 41, 50)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    untrained = hub_model(None)
    assert untrained.geometry == "caffe" and not untrained.training


@pytest.fixture
def release_server(tmp_path, monkeypatch):
    """Serve a released-format file on 127.0.0.1 and point the "voc12" entry at it."""
    served = tmp_path / "served"
    served.mkdir()
    reference = released_reference(n_blocks=TINY["n_blocks"], seed=4)
    save_released(reference, served / FILE_NAME)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setitem(zoo.ZOO, "voc12", zoo.ZooEntry(base_url + FILE_NAME, 3, "test"))
    monkeypatch.setitem(zoo.ZOO, "cocostuff10k", zoo.ZooEntry(base_url + "absent.pth", 3, "test"))
    yield reference, requests, tmp_path / "torch_home" / "hub" / "checkpoints"
    server.shutdown()
    server.server_close()


def test_named_weights_download_once_into_the_hub_cache(release_server):
    reference, requests, cache = release_server
    model = hub_model("voc12")
    assert requests == ["/" + FILE_NAME]
    assert (cache / FILE_NAME).is_file()
    assert model.geometry == "pytorch"
    x = torch.randn(1, 3, 33, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    again = DeepLabV2_ResNet101_MSC(3, **TINY)
    load_model_weights(again, "voc12", 3, log=lambda line: None)  # the --model-path route
    assert requests == ["/" + FILE_NAME]  # served from the cache
    assert read_weights("voc12").kind == "released checkpoint"


def test_named_weights_errors(release_server):
    _, requests, _ = release_server
    with pytest.raises(CheckpointError, match=r"voc12: the released weights are for 3 classes "
                                              r"\(test\) but 5 were asked for"):
        hub_model("voc12", n_classes=5)
    assert requests == []  # refused before any download
    with pytest.raises(CheckpointError, match=r"cocostuff10k: download of http://127.0.0.1:\d+/"
                                              r"absent.pth failed"):
        hub_model("cocostuff10k")


def test_hub_segmenter_is_the_demos_segmenter(toy_cfg, tmp_path):
    from tests.tiny_model import tiny_setup

    from libs.inference.segmenter import Segmenter
    from libs.utils.config import load_config

    config_path, checkpoint = tiny_setup(toy_cfg, tmp_path)
    hub = torch.hub.load(str(REPO), "segmenter", source="local", config=str(config_path),
                         pretrained=str(checkpoint))
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    labels = hub(image)
    assert labels.shape == (50, 70)
    np.testing.assert_array_equal(labels, Segmenter.from_config(load_config(config_path),
                                                                checkpoint)(image))
