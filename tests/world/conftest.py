"""World tests render many small frames: one intra-op thread avoids oversubscribing a shared CPU
(two threads on a loaded 2-core machine made these tests ~10x slower). Restored after each test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
