"""Session fixtures of the fault-injection suite (helpers live in faults_kit.py, a unique module name)."""

from pathlib import Path

import pytest
import torch
from faults_kit import make_checkpoint, make_dataset


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: the suite's inputs are tiny
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _default_limits():
    yield
    from hydranet.limits import set_max_image_pixels

    set_max_image_pixels(None)  # a test that changed the image limit leaves PIL as it found it


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """A tiny untrained run directory (never modified by a test: copy it first)."""
    return make_checkpoint(tmp_path_factory.mktemp("faults") / "run")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """Two 32x64 world frames as shards (never modified by a test: copy it first)."""
    return make_dataset(tmp_path_factory.mktemp("faults") / "data")


@pytest.fixture(scope="session")
def graph(ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint exported to ONNX (with its manifest beside it)."""
    from hydranet.deploy.export import export_checkpoint

    out = tmp_path_factory.mktemp("faults") / "model.onnx"
    export_checkpoint(ckpt, out, ["drivable", "depth"])
    return out
