"""Shadow mode: a candidate model vs the deployed graph (ONNX, through its manifest) on the same
frames — where they disagree, one of them is wrong, and the frame is worth a label.

Per task both have: drivable → 1 − IoU of the two masks; traffic_light → share of confident
lights (either side) without a same-state partner (IoU ≥ 0.3) on the other side; detection2d and
objects3d → |count difference| / max count of confident detections; depth → mean |log ratio|.
Score = mean over the shared tasks (the deployed graph may export a subset).
"""

from __future__ import annotations

import torch

from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerError, TriggerOptions, register_trigger
from hydranet.engine.triggers.projection import box_iou


class ShadowOptions(TriggerOptions):
    """``shadow``'s options: the detection score compared."""

    min_score: float = 0.3


@register_trigger
class Shadow(Trigger):
    """``shadow`` — shadow mode: the candidate and the deployed ONNX graph disagree on the same frames
    (masks: 1 − IoU; depth: mean |log ratio| capped at 1; lights: unmatched boxes; other detections:
    relative difference in the number of confident boxes)."""

    name = "shadow"
    needs_shadow = True

    Options = ShadowOptions

    def __init__(self, options: ShadowOptions) -> None:
        super().__init__(options)
        self.min_score = options.min_score

    def check(self, model_tasks: list[str]) -> None:
        """Remember the candidate's tasks; the overlap with the deployed graph is checked when scoring."""
        self.model_tasks = list(model_tasks)

    def score(self, frame: FrameContext) -> Score:
        """Mean disagreement in [0, 1] over the tasks both models have. Raises ``TriggerError`` without a
        deployed graph or when the two share no task."""
        ctx = frame.ctx
        if ctx.shadow is None:
            raise TriggerError("trigger 'shadow' needs the deployed graph: pass --shadow model.onnx")
        shared = [t for t in ctx.shadow.tasks if t in self.model_tasks]
        if not shared:
            raise TriggerError(f"trigger 'shadow': the deployed graph's tasks {sorted(ctx.shadow.tasks)} share none "
                               f"with the candidate's {sorted(self.model_tasks)}")
        parts: dict[str, float] = {}
        for t in shared:
            a, b = ctx.decoded(t)[frame.i], ctx.shadow_decoded(t)[frame.i]
            parts[t] = self._disagreement(t, a, b)
        worst = max(parts, key=parts.get)  # type: ignore[arg-type]
        return Score(sum(parts.values()) / len(parts),
                     f"shadow: candidate and deployed disagree most on {worst} ({parts[worst]:.2f})")

    def _disagreement(self, task: str, a, b) -> float:
        if task in ("drivable", "bev_semantic"):
            x, y = a.bool(), b.bool()
            union = int((x | y).sum())
            return 0.0 if union == 0 else 1 - int((x & y).sum()) / union
        if task == "depth":
            return float(torch.log(a.clamp(min=1e-3) / b.clamp(min=1e-3)).abs().mean().clamp(max=1.0))
        ka, kb = a["scores"] >= self.min_score, b["scores"] >= self.min_score
        if task == "traffic_light":
            ba, bb = a["boxes"][ka], b["boxes"][kb]
            if len(ba) + len(bb) == 0:
                return 0.0
            if len(ba) == 0 or len(bb) == 0:
                return 1.0
            same = ((a["camera"][ka][:, None] == b["camera"][kb][None])
                    & (a["state"][ka][:, None] == b["state"][kb][None]))
            iou = box_iou(ba, bb) * same
            unmatched = int((iou.max(1).values < 0.3).sum()) + int((iou.max(0).values < 0.3).sum())
            return unmatched / (len(ba) + len(bb))
        na, nb = int(ka.sum()), int(kb.sum())
        return abs(na - nb) / max(na, nb, 1)
