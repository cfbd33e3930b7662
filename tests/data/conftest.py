"""Fixtures for the data tests; shared helpers live in data_testkit.py (a unique module name)."""

import pytest

from hydranet.geometry import BevGrid
from hydranet.setup import Setup


@pytest.fixture
def setup():
    """The setup of ``make_sample`` frames: the default rig at 16x32, a small grid."""
    return Setup(image_size=(16, 32), grid=BevGrid((-2.0, 2.0), (-3.0, 3.0), 0.5))
