"""A tiny checkpoint and a tiny synthetic pool for the engine tests."""

from pathlib import Path

import pytest
import torch
from engine_testkit import write_checkpoint, write_world_yaml


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "run" / "step_00000000")


@pytest.fixture(scope="session")
def world_yaml(tmp_path_factory) -> Path:
    return write_world_yaml(tmp_path_factory.mktemp("world") / "pool.yaml")
