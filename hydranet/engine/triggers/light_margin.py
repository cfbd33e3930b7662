"""Traffic-light state margin: a light the head sees but whose state it cannot tell.

For every decoded light above ``min_score`` the heatmap holds one sigmoid score per state
(red, yellow, green) at the peak; margin = top-1 − top-2. A frame's score is 1 − the smallest
margin among its lights (0 when it has none): one ambiguous light is reason enough to label it.
"""

from __future__ import annotations

import torch

from hydranet.data.sample import LIGHT_STATES
from hydranet.engine.triggers.base import FrameContext, Score, Trigger, register_trigger


@register_trigger
class LightMargin(Trigger):
    """``light_margin`` — a confident traffic light whose two most likely states are close (CenterNet state heatmap)."""

    name = "light_margin"
    tasks = ("traffic_light",)

    def __init__(self, min_score: float = 0.25) -> None:
        super().__init__(min_score=min_score)
        self.min_score = min_score

    def score(self, frame: FrameContext) -> Score:
        """1 − the smallest top-1/top-2 state-probability margin over lights scoring >= ``min_score``
        (read at each box centre)."""
        ctx = frame.ctx
        d = frame.decoded("traffic_light")
        keep = d["scores"] >= self.min_score
        if not bool(keep.any()):
            return Score(0.0, "traffic_light: no lights")
        heat = torch.sigmoid(ctx.outputs["traffic_light"]["heatmap"][frame.i].float())  # [N, S, h, w]
        h, w = heat.shape[-2:]
        H, W = ctx.batch.images.shape[-2:]
        boxes, cams = d["boxes"][keep], d["camera"][keep]
        cx = ((boxes[:, 0] + boxes[:, 2]) / 2 * w / W).long().clamp(0, w - 1)
        cy = ((boxes[:, 1] + boxes[:, 3]) / 2 * h / H).long().clamp(0, h - 1)
        states = heat[cams, :, cy, cx]  # [L, S]
        top = states.topk(min(2, states.shape[1]), dim=1).values
        margin = top[:, 0] - top[:, 1] if top.shape[1] > 1 else top[:, 0]
        j = int(margin.argmin())
        best, second = states[j].topk(2).indices.tolist()
        return Score(float(1 - margin[j]), f"traffic_light: light in camera {int(cams[j])} is "
                                           f"{LIGHT_STATES[best]} or {LIGHT_STATES[second]} "
                                           f"(margin {float(margin[j]):.2f})")
