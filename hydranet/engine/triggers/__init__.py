"""Built-in triggers (importing this package registers them). See ``base.py`` for the contract."""

from hydranet.engine.triggers import (  # noqa: F401 - each module registers its trigger
    condition,
    depth_box,
    drivable_consistency,
    entropy,
    flicker,
    light_margin,
    projection,
    rare,
    shadow,
)
from hydranet.engine.triggers.base import (
    TRIGGERS,
    BatchContext,
    FrameContext,
    Score,
    Trigger,
    TriggerError,
    create_trigger,
    parse_trigger_specs,
    register_trigger,
)

__all__ = ["TRIGGERS", "BatchContext", "FrameContext", "Score", "Trigger", "TriggerError", "create_trigger",
           "parse_trigger_specs", "register_trigger"]
