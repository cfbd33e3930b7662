"""Cross-task disagreement: camera drivable vs BEV drivable on the ground plane.

Every BEV cell centre (x, y, z=0 in the ego frame: the ground under the rig) is projected into
each camera; where it lands inside the image (and closer than ``max_range`` metres, beyond which
a cell covers less than a pixel), the camera head's drivable probability at that pixel and the
BEV head's drivable probability of that cell should agree. Score = share of those (cell, camera)
pairs where one says drivable (p ≥ 0.5) and the other does not, scaled so that 25 % → 1.
"""

from __future__ import annotations

import torch

from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerOptions, register_trigger
from hydranet.geometry import invert_transform, project, transform_points


class DrivableConsistencyOptions(TriggerOptions):
    """``drivable_consistency``'s options: the range in metres compared and the BEV class read."""

    max_range: float = 25.0
    bev_class: str = "drivable"


@register_trigger
class DrivableConsistency(Trigger):
    """``drivable_consistency`` — the camera drivable mask and the BEV ``bev_class`` map disagree: BEV cell
    centres (ego frame, ground z = 0, within ``max_range`` m) are projected into each camera (OpenCV
    frame, K) and the two probabilities compared at 0.5."""

    name = "drivable_consistency"
    tasks = ("drivable", "bev_semantic")

    Options = DrivableConsistencyOptions

    def __init__(self, options: DrivableConsistencyOptions) -> None:
        super().__init__(options)
        self.max_range, self.bev_class = options.max_range, options.bev_class

    def score(self, frame: FrameContext) -> Score:
        """Fraction of projected BEV cells where camera and BEV disagree; the reason names the worst camera."""
        ctx = frame.ctx
        b = ctx.batch
        task = ctx.tasks()["bev_semantic"]
        cls = list(task.classes).index(self.bev_class)
        bev = ctx.probabilities("bev_semantic")[frame.i][cls]  # [R, C']
        cam = ctx.probabilities("drivable")[frame.i]  # [N, H, W]
        grid = task.setup.grid
        centres = grid.cell_centres().reshape(-1, 2)  # [R*C', 2] (x, y)
        keep = centres.norm(dim=1) <= self.max_range
        pts = torch.cat([centres, torch.zeros(len(centres), 1)], 1)[keep]
        p_bev = bev.reshape(-1)[keep] if bev.numel() == keep.numel() else None
        if p_bev is None:  # head resolution differs from the grid: resample to it
            bev = torch.nn.functional.interpolate(bev[None, None], size=grid.shape, mode="bilinear")[0, 0]
            p_bev = bev.reshape(-1)[keep]
        H, W = cam.shape[-2:]
        T = invert_transform(b.T_ego_from_cam[frame.i].float().cpu())
        disagree = total = 0
        worst, worst_cam = 0.0, 0
        for n in range(cam.shape[0]):
            uv, valid = project(transform_points(T[n], pts), b.intrinsics[frame.i, n].float().cpu(), (H, W))
            if not bool(valid.any()):
                continue
            u, v = uv[valid, 0].long(), uv[valid, 1].long()
            a = cam[n, v, u] >= 0.5
            c = p_bev[valid] >= 0.5
            bad = int((a != c).sum())
            disagree += bad
            total += int(valid.sum())
            if bad / max(int(valid.sum()), 1) > worst:
                worst, worst_cam = bad / int(valid.sum()), n
        if total == 0:
            return Score(0.0, "drivable_consistency: no ground cell in view")
        frac = disagree / total
        return Score(min(1.0, 4 * frac), f"drivable_consistency: camera and BEV disagree on {100 * frac:.0f} % of "
                                         f"the ground in view (worst: {b.camera_names[worst_cam]}, "
                                         f"{100 * worst:.0f} %)")
