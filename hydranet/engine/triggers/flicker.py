"""Temporal flicker: lights and objects that appear, vanish or change state between consecutive
frames of a sequence — the outputs of a good network move smoothly with the world.

Traffic lights: a confident light (score ≥ ``min_score``) in frame t is matched to the previous
frame's lights in the same camera by 2D IoU ≥ ``iou``; an unmatched light in either frame counts
as appear/vanish, a matched pair with different states as a state change. 3D objects: the previous
frame's confident boxes are moved into the current ego frame with ``T_world_from_ego`` of both
frames; a box with no same-class partner within ``match_m`` metres in the other frame flickers.
Objects leaving the field (beyond ``edge_m`` of the grid's border) are not counted.

Score = flicker events / confident detections of both frames. The first frame of a sequence, or a
frame whose predecessor (``frame_index - 1``) was not seen just before, scores 0 and says so. The
trigger keeps only the previous frame's detections: memory is bounded whatever the pool size.
"""

from __future__ import annotations

from typing import Any

import torch

from hydranet.data import LIGHT_STATES
from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerError, TriggerOptions, register_trigger
from hydranet.engine.triggers.projection import box_iou
from hydranet.geometry import invert_transform, transform_points


class FlickerOptions(TriggerOptions):
    """``flicker``'s options: detection score, light IoU, 3D match distance and grid-edge margin (metres)."""

    min_score: float = 0.3
    iou: float = 0.3
    match_m: float = 2.5
    edge_m: float = 4.0


@register_trigger
class Flicker(Trigger):
    """``flicker`` — detections that are unstable between consecutive frames of a sequence: traffic
    lights that vanish, appear or change state (image IoU < ``iou``), and 3D objects (ego-motion
    compensated, matched within ``match_m`` m, ignoring the ``edge_m`` m at the grid edge) that vanish or
    appear. Stateful: frames must arrive in order."""

    name = "flicker"

    Options = FlickerOptions

    def __init__(self, options: FlickerOptions) -> None:
        super().__init__(options)
        self.min_score, self.iou, self.match_m, self.edge_m = options.min_score, options.iou, options.match_m, \
            options.edge_m
        self._prev: dict[str, Any] | None = None

    def check(self, model_tasks: list[str]) -> None:
        """Use the traffic_light and/or objects3d heads the model has; ``TriggerError`` when it has neither."""
        self.use = [t for t in ("traffic_light", "objects3d") if t in model_tasks]
        if not self.use:
            raise TriggerError("trigger 'flicker' needs a traffic_light or objects3d head; the model has "
                               f"{sorted(model_tasks)}")

    def _current(self, frame: FrameContext) -> dict[str, Any]:
        cur: dict[str, Any] = {"scene": frame.scene_id, "index": frame.frame_index,
                               "T_world_from_ego": frame.ctx.batch.T_world_from_ego[frame.i].double().cpu()}
        if "traffic_light" in self.use:
            d = frame.decoded("traffic_light")
            k = d["scores"] >= self.min_score
            cur["lights"] = (d["boxes"][k], d["camera"][k], d["state"][k])
        if "objects3d" in self.use:
            d = frame.decoded("objects3d")
            k = d["scores"] >= self.min_score
            cur["objects"] = (d["boxes"][k, :2].double(), d["classes"][k])
        return cur

    def score(self, frame: FrameContext) -> Score:
        """Flicker events (vanished + appeared + 2 × state changes) over the detections of both frames,
        capped at 1; 0 on a sequence's first frame."""
        cur = self._current(frame)
        prev, self._prev = self._prev, cur
        if prev is None or prev["scene"] != cur["scene"] or prev["index"] != cur["index"] - 1:
            return Score(0.0, "flicker: first frame of its sequence")
        events, total, words = 0, 0, []
        if "lights" in cur:
            (b0, c0, s0), (b1, c1, s1) = prev["lights"], cur["lights"]
            total += len(b0) + len(b1)
            if len(b0) and len(b1):
                iou = box_iou(b0, b1) * (c0[:, None] == c1[None, :])
                m0, j0 = iou.max(1)
                m1 = iou.max(0).values
                gone, new = int((m0 < self.iou).sum()), int((m1 < self.iou).sum())
                matched = (m0 >= self.iou).nonzero().flatten()
                changed = [(LIGHT_STATES[int(s0[a])], LIGHT_STATES[int(s1[j0[a]])]) for a in matched.tolist()
                           if int(s0[a]) != int(s1[j0[a]])]
            else:
                gone, new, changed = len(b0), len(b1), []
            events += gone + new + 2 * len(changed)
            if gone or new:
                words.append(f"{gone} lights vanished, {new} appeared")
            if changed:
                words.append("light " + ", ".join(f"{a}→{b}" for a, b in changed[:3]))
        if "objects" in cur:
            (p0, k0), (p1, k1) = prev["objects"], cur["objects"]
            T = invert_transform(cur["T_world_from_ego"]) @ prev["T_world_from_ego"]  # prev ego -> current ego
            if len(p0):
                p0 = transform_points(T, torch.cat([p0, torch.zeros(len(p0), 1, dtype=p0.dtype)], 1))[:, :2]
            total += len(p0) + len(p1)
            inner = self._inner(frame)
            if len(p0) and len(p1):
                dist = torch.cdist(p0, p1) + 1e6 * (k0[:, None] != k1[None, :])
                gone = int(((dist.min(1).values > self.match_m) & inner(p0)).sum())
                new = int(((dist.min(0).values > self.match_m) & inner(p1)).sum())
            else:
                gone, new = int(inner(p0).sum()) if len(p0) else 0, int(inner(p1).sum()) if len(p1) else 0
            events += gone + new
            if gone or new:
                words.append(f"{gone} 3D objects vanished, {new} appeared")
        if total == 0:
            return Score(0.0, "flicker: nothing detected in either frame")
        frac = min(1.0, events / total)
        return Score(frac, "flicker: " + ("; ".join(words) if words else "stable"))

    def _inner(self, frame: FrameContext):
        grid = getattr(frame.ctx.model, "grid", None)
        if grid is None:
            return lambda p: torch.ones(len(p), dtype=torch.bool)
        e = self.edge_m
        return lambda p: ((p[:, 0] > grid.x_range[0] + e) & (p[:, 0] < grid.x_range[1] - e)
                          & (p[:, 1] > grid.y_range[0] + e) & (p[:, 1] < grid.y_range[1] - e))
