"""Traffic-light state margin: a light the head sees but whose state it cannot tell.

For every decoded light above ``min_score`` the task's state branch gives a softmax over the states
(red, yellow, green, ``state_probs``); margin = top-1 − top-2 probability. A frame's score is 1 − the smallest
margin among its lights (0 when it has none): one ambiguous light is reason enough to label it.
"""

from __future__ import annotations

from hydranet.data import LIGHT_STATES
from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerOptions, register_trigger


class LightMarginOptions(TriggerOptions):
    """``light_margin``'s options: the detection score a light needs."""

    min_score: float = 0.25


@register_trigger
class LightMargin(Trigger):
    """``light_margin`` — a confident traffic light whose two most likely states are close (state softmax)."""

    name = "light_margin"
    tasks = ("traffic_light",)

    Options = LightMarginOptions

    def __init__(self, options: LightMarginOptions) -> None:
        super().__init__(options)
        self.min_score = options.min_score

    def score(self, frame: FrameContext) -> Score:
        """1 − the smallest top-1/top-2 state-probability margin over lights scoring >= ``min_score``
        (read at each box centre)."""
        d = frame.decoded("traffic_light")
        keep = d["scores"] >= self.min_score
        if not bool(keep.any()):
            return Score(0.0, "traffic_light: no lights")
        states = d["state_probs"][keep].float()  # [L, S]
        cams = d["camera"][keep]
        top = states.topk(min(2, states.shape[1]), dim=1).values
        margin = top[:, 0] - top[:, 1] if top.shape[1] > 1 else top[:, 0]
        j = int(margin.argmin())
        best, second = states[j].topk(2).indices.tolist()
        return Score(float(1 - margin[j]), f"traffic_light: light in camera {int(cams[j])} is "
                                           f"{LIGHT_STATES[best]} or {LIGHT_STATES[second]} "
                                           f"(margin {float(margin[j]):.2f})")
