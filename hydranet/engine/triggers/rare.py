"""Rare classes and states: frames where the model believes it sees something the training set
has little of (a red light, a cone). Rarity is the user's call: ``rare:classes=cone|pedestrian;
states=red``. Reads whichever of detection2d, objects3d and traffic_light the model has.

Score = 1 − Π(1 − score) over matching detections (the chance at least one is real, if scores
were calibrated probabilities), so one confident cone outranks three faint ones.
"""

from __future__ import annotations

from hydranet.data import LIGHT_STATES
from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerError, TriggerOptions, register_trigger
from hydranet.setup import OBJECT_CLASSES


def _as_list(v: str | list[str] | None) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


class RareOptions(TriggerOptions):
    """``rare``'s options: the rare object classes and light states (one name or a list), the score needed."""

    classes: str | list[str] | None = "cone"
    states: str | list[str] | None = "red"
    min_score: float = 0.3


@register_trigger
class Rare(Trigger):
    """``rare:classes=cone,states=red`` — frames with confident detections of rare object classes
    (detection2d/objects3d) or traffic-light states. Raises ``TriggerError`` for an unknown class/state."""

    name = "rare"

    Options = RareOptions

    def __init__(self, options: RareOptions) -> None:
        super().__init__(options)
        self.classes, self.states, self.min_score = _as_list(options.classes), _as_list(options.states), \
            options.min_score
        bad = [c for c in self.classes if c not in OBJECT_CLASSES] + [s for s in self.states if s not in LIGHT_STATES]
        if bad:
            raise TriggerError(f"trigger 'rare': unknown class/state {bad}; classes {OBJECT_CLASSES}, "
                               f"states {LIGHT_STATES}")

    def check(self, model_tasks: list[str]) -> None:
        """Choose the heads to read; ``TriggerError`` when the model has none that can see the requested
        classes/states."""
        self.sources = [t for t in ("detection2d", "objects3d") if t in model_tasks and self.classes]
        self.lights = "traffic_light" in model_tasks and bool(self.states)
        if not self.sources and not self.lights:
            raise TriggerError("trigger 'rare' needs detection2d/objects3d (for classes) or traffic_light (for "
                               f"states); the model has {sorted(model_tasks)}")

    def score(self, frame: FrameContext) -> Score:
        """Probability that at least one detection is real: 1 − ∏(1 − score) over matching detections."""
        miss, found = 1.0, []
        for task in self.sources:
            d = frame.decoded(task)
            for c in self.classes:
                s = d["scores"][(d["classes"] == OBJECT_CLASSES.index(c)) & (d["scores"] >= self.min_score)]
                if len(s):
                    miss *= float((1 - s).prod())
                    found.append(f"{len(s)} {c} ({task}, best {float(s.max()):.2f})")
        if self.lights:
            d = frame.decoded("traffic_light")
            for st in self.states:
                s = d["scores"][(d["state"] == LIGHT_STATES.index(st)) & (d["scores"] >= self.min_score)]
                if len(s):
                    miss *= float((1 - s).prod())
                    found.append(f"{len(s)} {st} light (best {float(s.max()):.2f})")
        if not found:
            return Score(0.0, "rare: none")
        return Score(1 - miss, "rare: " + ", ".join(found))
