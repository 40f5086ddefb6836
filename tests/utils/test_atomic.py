"""Written files and folders get the user's umask, not tempfile's private 0o600/0o700."""

import os
import stat

import pytest

from libs.datasets.synthetic import Sizes, generate_synthetic
from libs.utils.atomic import current_umask, save_torch, write_bytes, write_json


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    assert current_umask() == umask
    written = [write_bytes(b"x", tmp_path / "a.bin"), write_json({"a": 1}, tmp_path / "a.json"),
               save_torch({"w": 1}, tmp_path / "a.pth")]
    for path in written:
        assert mode(path) == 0o666 & ~umask, path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_synthetic_dataset_folder_follows_the_umask(tmp_path, umask):
    root = tmp_path / "synthetic"
    generate_synthetic(root, Sizes(2, 1, 16, 20), seed=0)
    assert mode(root) == 0o777 & ~umask
    assert mode(root / "synthetic.json") == 0o666 & ~umask
    assert mode(root / "imageLists") == 0o777 & ~umask


def test_publish_link_is_one_file_and_replaces_atomically(tmp_path, umask):
    from libs.utils.atomic import publish_link

    source = write_bytes(b"weights", tmp_path / "checkpoint_4.pth")
    final = tmp_path / "checkpoint_final.pth"
    final.write_bytes(b"an older final")
    publish_link(source, final)
    assert final.samefile(source) and final.read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_4.pth",
                                                          "checkpoint_final.pth"]
