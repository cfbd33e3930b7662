"""User-named conditions: ``night``, ``dusk``, ``fog`` (``condition:name=night``).

When the source knows the condition (the synthetic world's scene ``lighting``/``fog``, or a
``metadata`` dict a user's dataset provides), that decides: score 1 or 0, reason "metadata".
Otherwise the images decide, so the trigger works on any pool:
- night/dusk: mean luma (ITU-R BT.601) of the rig below ``dark`` (night) / ``dim`` (dusk) in
  8-bit counts, score ramping linearly to 1 at half that;
- fog: low global contrast — the standard deviation of luma in the upper half of each camera
  (where distant things are) below ``contrast``, the dark channel prior's cue (He et al. 2009)
  in its cheapest form.
"""

from __future__ import annotations

from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerError, TriggerOptions, register_trigger

_CONDITIONS = ("night", "dusk", "fog")


class ConditionOptions(TriggerOptions):
    """``condition``'s options: the condition ``name``, mean-luma cut-offs ``dark``/``dim`` (0-255), upper-image
    ``contrast`` for fog, and the fog extinction (per metre) above which metadata calls a frame foggy."""

    name: str = "night"
    dark: float = 60.0
    dim: float = 95.0
    contrast: float = 28.0
    fog_min: float = 0.004


@register_trigger
class Condition(Trigger):
    """``condition:name=night|dusk|fog`` — frames in a rare driving condition. Uses the source's
    metadata when it has it (``lighting``; ``fog`` extinction per metre), else the images: mean luma
    (0-255) below ``dark``/``dim``, or upper-image contrast below ``contrast`` for fog.
    Raises ``TriggerError`` for an unknown condition."""

    name = "condition"
    Options = ConditionOptions

    def __init__(self, options: ConditionOptions) -> None:
        if options.name not in _CONDITIONS:
            raise TriggerError(f"trigger 'condition': unknown condition '{options.name}'; choose from {_CONDITIONS}")
        super().__init__(options)
        self.condition, self.dark, self.dim = options.name, options.dark, options.dim
        self.contrast, self.fog_min = options.contrast, options.fog_min

    def score(self, frame: FrameContext) -> Score:
        """1 for a metadata hit (0 for a miss), else a ramp in [0, 1] of how far brightness/contrast
        lies below its level."""
        meta = frame.metadata
        c = self.condition
        if c in ("night", "dusk") and "lighting" in meta:
            hit = meta["lighting"] == c
            return Score(float(hit), f"{c}: lighting is {meta['lighting']} (metadata)")
        if c == "fog" and "fog" in meta:
            hit = float(meta["fog"]) >= self.fog_min
            return Score(float(hit), f"fog: extinction {float(meta['fog']):.3f}/m (metadata)")
        img = frame.ctx.batch.images[frame.i].float()  # [N, 3, H, W]
        luma = 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
        if c in ("night", "dusk"):
            level = self.dark if c == "night" else self.dim
            mean = float(luma.mean())
            s = min(1.0, max(0.0, (level - mean) / (level / 2)))
            return Score(s, f"{c}: mean brightness {mean:.0f}/255 (from the images)")
        std = float(luma[:, : luma.shape[1] // 2].flatten(1).std(1).mean())
        s = min(1.0, max(0.0, (self.contrast - std) / (self.contrast / 2)))
        return Score(s, f"fog: upper-image contrast {std:.0f} (from the images)")
