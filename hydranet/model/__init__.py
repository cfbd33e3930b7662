"""The HydraNet model: RegNet trunk, FPN neck, camera→BEV fusion, task heads (see docs/model.md)."""

from hydranet.model.config import MODEL_PRESETS, FusionConfig, GridConfig, ModelConfig, NeckConfig, TrunkConfig
from hydranet.model.hydranet import PIXEL_MEAN, PIXEL_STD, HydraNet, create_model
from hydranet.model.trunk import TRUNK_PRESETS, create_trunk

__all__ = [
    "MODEL_PRESETS", "PIXEL_MEAN", "PIXEL_STD", "TRUNK_PRESETS", "FusionConfig", "GridConfig", "HydraNet",
    "ModelConfig", "NeckConfig", "TrunkConfig", "create_model", "create_trunk",
]
