"""Cross-task disagreement: 3D objects projected into the cameras vs the 2D detector.

Only a multi-task network offers this for free: the BEV head and the camera head see the same
objects through different sub-graphs. Each confident 3D box (score ≥ ``min_score``) is projected
into every camera it falls in (its 8 corners → the enclosing 2D box, clipped to the image); a
projected box is *confirmed* when a confident 2D detection of the same class in that camera
overlaps it with IoU ≥ ``iou``. Conversely each confident 2D detection of a class the 3D head
also predicts (car, truck, pedestrian, cone) should be covered by some projected box.
Score = unconfirmed share of both sides (0 when there is nothing on either side).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerOptions, register_trigger
from hydranet.geometry import box_corners, invert_transform, project, transform_points
from hydranet.setup import OBJECT_CLASSES


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix ``[A, B]`` of xyxy boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=1e-6)


def project_boxes3d(boxes: Tensor, K: Tensor, T_ego_from_cam: Tensor,
                    image_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Project ego-frame boxes ``[M, 7]`` into ``N`` cameras.

    Returns (boxes2d ``[P, 4]`` xyxy px, camera ``[P]``, source box index ``[P]``) for every
    (box, camera) pair where all 8 corners are in front of the camera and the clipped box is
    non-empty."""
    if len(boxes) == 0:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    corners = box_corners(boxes.float())  # [M, 8, 3]
    T_cam_from_ego = invert_transform(T_ego_from_cam.float())  # [N, 4, 4]
    out, cams, src = [], [], []
    h, w = image_hw
    for n in range(len(K)):
        pc = transform_points(T_cam_from_ego[n], corners)  # [M, 8, 3]
        uv, valid = project(pc, K[n].float())
        front = valid.all(-1)
        if not bool(front.any()):
            continue
        lo, hi = uv.min(1).values, uv.max(1).values
        b2 = torch.cat([lo, hi], -1)
        b2[:, 0::2] = b2[:, 0::2].clamp(0, w)
        b2[:, 1::2] = b2[:, 1::2].clamp(0, h)
        ok = front & ((b2[:, 2] - b2[:, 0]) > 1) & ((b2[:, 3] - b2[:, 1]) > 1)
        idx = ok.nonzero().flatten()
        out.append(b2[idx])
        cams.append(torch.full((len(idx),), n, dtype=torch.long))
        src.append(idx)
    if not out:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(out), torch.cat(cams), torch.cat(src)


class ProjectionOptions(TriggerOptions):
    """``projection``'s options: detection score, the IoU a 2D/3D pair must reach, the classes compared."""

    min_score: float = 0.3
    iou: float = 0.2
    classes: list[str] | None = None


@register_trigger
class Projection(Trigger):
    """``projection`` — 3D and 2D detections disagree: confident 3D boxes projected into the cameras (ego →
    OpenCV camera frame, K) that match no 2D box of the same class and camera (IoU < ``iou``), and 2D
    boxes with no projected 3D box."""

    name = "projection"
    tasks = ("objects3d", "detection2d")

    Options = ProjectionOptions

    def __init__(self, options: ProjectionOptions) -> None:
        super().__init__(options)
        self.min_score, self.iou = options.min_score, options.iou
        self.classes = options.classes or ["car", "truck", "pedestrian", "cone"]

    def score(self, frame: FrameContext) -> Score:
        """Fraction of projected 3D boxes plus 2D boxes (of ``classes``, score >= ``min_score``) left unmatched."""
        b = frame.ctx.batch
        d3 = frame.decoded("objects3d")
        d2 = frame.decoded("detection2d")
        ids = torch.tensor([OBJECT_CLASSES.index(c) for c in self.classes])
        k3 = (d3["scores"] >= self.min_score) & torch.isin(d3["classes"], ids)
        k2 = (d2["scores"] >= self.min_score) & torch.isin(d2["classes"], ids)
        proj, cam, src = project_boxes3d(d3["boxes"][k3], b.intrinsics[frame.i].cpu(),
                                         b.T_ego_from_cam[frame.i].cpu(), tuple(b.images.shape[-2:]))
        cls3 = d3["classes"][k3][src]
        boxes2, cam2, cls2 = d2["boxes"][k2], d2["camera"][k2], d2["classes"][k2]
        if len(proj) == 0 and len(boxes2) == 0:
            return Score(0.0, "projection: no confident objects")
        same = (cam[:, None] == cam2[None, :]) & (cls3[:, None] == cls2[None, :])
        iou = box_iou(proj, boxes2) * same if len(proj) and len(boxes2) else torch.zeros(len(proj), len(boxes2))
        lost3 = int((iou.max(1).values < self.iou).sum()) if len(boxes2) else len(proj)
        lost2 = int((iou.max(0).values < self.iou).sum()) if len(proj) else len(boxes2)
        frac = (lost3 + lost2) / (len(proj) + len(boxes2))
        return Score(frac, f"projection: {lost3} of {len(proj)} 3D boxes unseen by the 2D detector, "
                           f"{lost2} of {len(boxes2)} 2D detections without a 3D box")
