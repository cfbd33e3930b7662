"""Fixtures for the data tests; shared helpers live in data_testkit.py (a unique module name)."""

import pytest

from hydranet.geometry import BevGrid
from hydranet.setup import default_rig


@pytest.fixture
def rig_and_grid():
    return default_rig((16, 32)), BevGrid((-2.0, 2.0), (-3.0, 3.0), 0.5)
