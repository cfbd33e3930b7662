"""The embedded synthetic 8-camera driving world: ``SyntheticWorld(WorldConfig(...))[i] -> Sample``."""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "config": ["WorldConfig", "load_world_config"],
    "dataset": ["GENERATOR_VERSION", "SyntheticWorld", "WORLD_LABELS"],
    "generate": ["GenerateResult", "check_existing", "generate", "resolve"],
})
