"""The HydraNet model: RegNet trunk, FPN neck, camera→BEV fusion, task heads (see docs/model.md)."""

from hydranet.model.builder import ModelParts, build_parts, create_model
from hydranet.model.config import MODEL_PRESETS, FusionConfig, ModelConfig, NeckConfig, TrunkConfig
from hydranet.model.hydranet import PIXEL_MEAN, PIXEL_STD, HydraNet
from hydranet.model.registry import TRUNKS, TrunkOptions, create_trunk, register_trunk
from hydranet.model.trunk import TRUNK_PRESETS
from hydranet.model.zoo import PRETRAINED, Pretrained, ZooError, register_pretrained

__all__ = [
    "MODEL_PRESETS", "PIXEL_MEAN", "PIXEL_STD", "PRETRAINED", "TRUNK_PRESETS", "Pretrained", "ZooError", "FusionConfig", "HydraNet",
    "ModelConfig", "ModelParts", "NeckConfig", "TRUNKS", "TrunkConfig", "TrunkOptions", "build_parts", "create_model",
    "create_trunk", "register_pretrained", "register_trunk",
]
