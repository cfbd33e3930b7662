"""The embedded synthetic 8-camera driving world: ``SyntheticWorld(WorldConfig(...))[i] -> Sample``."""

from hydranet.world.config import WorldConfig
from hydranet.world.dataset import GENERATOR_VERSION, WORLD_LABELS, SyntheticWorld

__all__ = ["WorldConfig", "SyntheticWorld", "WORLD_LABELS", "GENERATOR_VERSION"]
