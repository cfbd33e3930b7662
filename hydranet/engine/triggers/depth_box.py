"""Cross-task disagreement: predicted depth vs the distance of predicted 3D boxes.

Each confident 3D box is projected into the cameras (see ``projection.project_boxes3d``); the
median predicted depth inside its projected 2D box should lie between the box's nearest and
farthest corner depth (± ``margin`` metres) — the camera sees the box's surface, or something in
front of it (occlusion: counted only when the depth is *behind* the box, which occlusion cannot
explain). Score = share of projected boxes whose depth is farther than the box.
"""

from __future__ import annotations

from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerOptions, register_trigger
from hydranet.engine.triggers.projection import project_boxes3d
from hydranet.geometry import box_corners, invert_transform, transform_points


class DepthBoxOptions(TriggerOptions):
    """``depth_box``'s options: the 3D score a box needs and the depth margin in metres."""

    min_score: float = 0.3
    margin: float = 2.0


@register_trigger
class DepthBox(Trigger):
    """``depth_box`` — the depth head sees through confident 3D boxes: in the box's projected image
    rectangle the median predicted depth (camera z, metres) lies more than ``margin`` m beyond the box's
    farthest corner. Needs ``objects3d`` and ``depth``."""

    name = "depth_box"
    tasks = ("objects3d", "depth")

    Options = DepthBoxOptions

    def __init__(self, options: DepthBoxOptions) -> None:
        super().__init__(options)
        self.min_score, self.margin = options.min_score, options.margin

    def score(self, frame: FrameContext) -> Score:
        """Fraction of confident in-view 3D boxes (score >= ``min_score``) that the depth map sees through."""
        b = frame.ctx.batch
        d3 = frame.decoded("objects3d")
        depth = frame.decoded("depth")  # [N, H, W] metres
        boxes = d3["boxes"][d3["scores"] >= self.min_score]
        K, T = b.intrinsics[frame.i].cpu(), b.T_ego_from_cam[frame.i].cpu()
        proj, cam, src = project_boxes3d(boxes, K, T, tuple(b.images.shape[-2:]))
        if len(proj) == 0:
            return Score(0.0, "depth_box: no confident 3D box in view")
        T_cam = invert_transform(T.float())
        corners = box_corners(boxes.float())
        behind, worst = 0, 0.0
        for k in range(len(proj)):
            x1, y1, x2, y2 = proj[k].long().tolist()
            patch = depth[cam[k], y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
            if patch.numel() == 0:
                continue
            seen = float(patch.median())
            z = transform_points(T_cam[cam[k]], corners[src[k]])[:, 2]
            far = float(z.max()) + self.margin
            if seen > far:
                behind += 1
                worst = max(worst, seen - far + self.margin)
        frac = behind / len(proj)
        return Score(frac, f"depth_box: depth sees through {behind} of {len(proj)} 3D boxes"
                           + (f" (up to {worst:.1f} m behind)" if behind else ""))
