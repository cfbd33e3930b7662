"""The HydraNet model: RegNet trunk, FPN neck, camera→BEV fusion, task heads (see docs/model.md)."""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "builder": ["ModelParts", "build_parts", "create_model"],
    "config": ["FusionConfig", "MODEL_PRESETS", "ModelConfig", "NeckConfig", "TrunkConfig"],
    "hydranet": ["HydraNet", "PIXEL_MEAN", "PIXEL_STD"],
    "registry": ["TRUNKS", "TrunkOptions", "create_trunk", "register_trunk"],
    "temporal": ["TemporalState"],
    "trunk": ["TRUNK_PRESETS"],
    "zoo": ["PRETRAINED", "Pretrained", "ZOO_SCHEME", "ZooError", "find_pretrained", "register_pretrained",
            "verified_directory"],
})
