"""2D object detection per camera: anchor-free CenterNet on one FPN level (stride 4 by default, ``stride: 8``
to halve the cost; optionally several levels, summed).

Head outputs (per camera, stride ``s``): ``heatmap [C]`` logits (one per class of ``setup.classes["detection2d"]``),
``offset [2]`` sub-cell centre offset, ``log_size [2]`` log(width, height) in cells.
Loss: penalty-reduced focal loss on the heatmap + L1 on the offset + either L1 on the log size or
GIoU on the decoded box (``box_loss``). Objects whose ``visible`` fraction is below ``min_visible``
are ignored: not learnt, and not counted as negatives either.
Decoded (per sample): ``dict(boxes [K,4] px, scores [K], classes [K], camera [K])``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from hydranet.data import Batch
from hydranet.metrics import Detection2DMetric, Metric
from hydranet.tasks.base import HeadContext, register_task
from hydranet.tasks.centernet2d import (
    CenterNet2DOptions,
    Decoded2D,
    centernet_bias_init,
    centernet_losses,
    decode_boxes2d,
)
from hydranet.tasks.heads import CameraTask, check_camera_output
from hydranet.tasks.heatmaps import boxes_to_draw
from hydranet.viz import draw_boxes2d


class Detection2DOptions(CenterNet2DOptions):
    """``CenterNet2DOptions`` + ``min_visible``: objects whose visible fraction (0..1) is below it are
    ignored by the loss and the metric."""

    min_visible: float = Field(0.25, ge=0, le=1)


@register_task
class Detection2D(CameraTask):
    """2D boxes per camera with CenterNet (Zhou et al., "Objects as Points", 2019); see the module doc.

    Label ``detection2d``: boxes ``[M, 4]`` x1, y1, x2, y2 in pixels, ``classes``, ``camera``, ``visible``.
    Metric: COCO AP@[.5:.95] per class and per camera (``Detection2DMetric``)."""

    name = "detection2d"
    # Stride 4 (CenterNet's output stride): objects in 128×256 cameras are ~10 px, so at stride 8 nearby
    # centres would share a cell. One shared 3×3 stem keeps it as cheap as stride 8 with per-output branches.
    preferred_stride = 4
    label = "detection2d"
    Options = Detection2DOptions

    @property
    def classes(self) -> tuple[str, ...]:
        """The class vocabulary: ``setup.classes["detection2d"]`` (heatmap channel c is ``classes[c]``)."""
        return self.vocabulary()

    def build_head(self, ctx: HeadContext) -> nn.Module:
        """Camera head with ``heatmap [C]``, ``offset [2]`` and ``log_size [2]`` per cell."""
        outputs = {"heatmap": len(self.classes), "offset": 2, "log_size": 2}
        return self.camera_head(ctx, outputs, bias_init=centernet_bias_init(self, ctx))

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss", "heatmap", "offset", "box"}`` from ``centernet_losses``: penalty-reduced focal loss + L1
        offset + L1 log size (or GIoU), normalised by the objects of present samples.

        Raises ``ValueError`` on outputs that are not ``[B, N, ...]``, or label boxes with non-finite
        coordinates or a camera/class index out of range."""
        parts, _, _ = centernet_losses(self, outputs, batch, "classes", len(self.classes),
                                       keep_key="visible", min_keep=self.cfg.min_visible)
        return parts

    def _decode_one(self, outputs: dict[str, Tensor], b: int, batch: Batch) -> Decoded2D:
        stride = self.output_stride(outputs["heatmap"], batch)
        return decode_boxes2d(outputs["heatmap"][b], outputs["offset"][b], outputs["log_size"][b], stride,
                              tuple(batch.images.shape[-2:]), self.cfg.max_detections, self.cfg.score_threshold,
                              self.cfg.nms_kernel)

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[dict[str, Tensor]]:
        """Per sample ``dict(boxes [K, 4] x1y1x2y2 px, scores [K], classes [K], camera [K])``, best first,
        ``scores >= score_threshold``, at most ``max_detections``."""
        check_camera_output(self.name, outputs["heatmap"], batch)
        result = []
        for b in range(len(batch)):
            d = self._decode_one(outputs, b, batch)
            result.append({"boxes": d.boxes.cpu(), "scores": d.scores.cpu(), "classes": d.channel.cpu(),
                           "camera": d.camera.cpu()})
        return result

    def make_metric(self) -> Metric:
        """``Detection2DMetric`` (COCO AP) per class and per camera of the setup's first rig, ignoring objects
        below ``min_visible``."""
        # Objects this task ignores in training (mostly hidden) are ignored in the metric too.
        return Detection2DMetric(classes=self.classes, num_cameras=len(self.setup.rig()),
                                 min_visible=self.cfg.min_visible)

    def draw(self, views: Any, decoded: dict[str, Tensor], ground_truth: bool = False) -> None:
        """Boxes over the cameras: ground truth dashed, predictions with ``scores >= draw_threshold`` and their
        scores; an empty set leaves a note in ``views``."""
        decoded = boxes_to_draw(self, views, decoded, ground_truth)
        if decoded is None:
            return
        draw_boxes2d(views, decoded["boxes"], decoded["camera"], decoded["classes"], dashed=ground_truth,
                     scores=None if ground_truth else decoded.get("scores"), names=self.classes)
