"""Triggers: one file each, registered in ``TRIGGERS`` (loaded on first lookup, with the ``hydranet.triggers``
entry points). See ``base.py`` for the contract."""

from hydranet.engine.triggers.base import (
    TRIGGERS,
    BatchContext,
    FrameContext,
    Score,
    Trigger,
    TriggerError,
    TriggerOptions,
    create_trigger,
    parse_trigger_specs,
    register_trigger,
)

__all__ = ["TRIGGERS", "BatchContext", "FrameContext", "Score", "Trigger", "TriggerError", "TriggerOptions",
           "create_trigger", "parse_trigger_specs", "register_trigger"]
