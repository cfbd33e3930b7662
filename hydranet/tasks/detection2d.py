"""2D object detection per camera: anchor-free CenterNet on one FPN level (stride 4 by default, ``stride: 8``
to halve the cost; optionally several levels, summed).

Head outputs (per camera, stride ``s``): ``heatmap [C]`` logits (one per ``OBJECT_CLASSES``),
``offset [2]`` sub-cell centre offset, ``log_size [2]`` log(width, height) in cells.
Loss: penalty-reduced focal loss on the heatmap + L1 on the offset + either L1 on the log size or
GIoU on the decoded box (``box_loss``). Objects whose ``visible`` fraction is below ``min_visible``
are ignored: not learnt, and not counted as negatives either.
Decoded (per sample): ``dict(boxes [K,4] px, scores [K], classes [K], camera [K])``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from hydranet.data.labels import LabelSpec
from hydranet.data.sample import OBJECT_CLASSES, Batch
from hydranet.tasks.base import HeadContext, Metric, register_task
from hydranet.tasks.centernet2d import Decoded2D, decode_boxes2d, encode_boxes2d, pred_boxes_at
from hydranet.tasks.common import (
    GT_COLOR,
    PRED_COLOR,
    CameraHeadOptions,
    CameraTask,
    above_threshold,
    check_camera_output,
    choose_stride,
    giou_loss,
    heatmap_focal_loss,
    present_index,
    prior_bias,
)


class CenterNet2DOptions(CameraHeadOptions):
    width: int = Field(32, ge=1)
    min_overlap: float = Field(0.7, gt=0, lt=1)  # Gaussian radius: IoU kept when the centre is off by r
    # Floor of the Gaussian radius in cells. Half the objects of a 96×192 camera are < 3 cells at stride 4,
    # where min_overlap alone gives radius 0: a lone positive cell ringed by full-strength negatives.
    min_radius: int = Field(1, ge=0)
    # log_size starts at this box size (px) rather than at one cell: the median demo object is ~11 px,
    # and at lr 3e-3 a bias needs hundreds of steps to walk there on its own.
    prior_size_px: float = Field(12.0, gt=0)
    box_loss: Literal["l1", "giou"] = "l1"
    heatmap_weight: float = 1.0
    offset_weight: float = 1.0
    size_weight: float = 1.0  # L1 on log size, or GIoU when box_loss == "giou"
    max_detections: int = Field(100, ge=1)
    # decode keeps peaks >= score_threshold (low: AP needs the low-score tail); draw shows >= draw_threshold
    score_threshold: float = Field(0.1, ge=0, le=1)
    draw_threshold: float = Field(0.3, ge=0, le=1)
    nms_kernel: int = Field(3, ge=1)


class Detection2DOptions(CenterNet2DOptions):
    min_visible: float = Field(0.25, ge=0, le=1)


def centernet_bias_init(task: CameraTask, ctx: HeadContext) -> dict[str, float]:
    """Heatmaps start at the focal prior 0.01 (RetinaNet §4.1), log sizes at ``prior_size_px``."""
    stride = choose_stride(ctx, task.cfg.stride, task.preferred_stride)
    return {"heatmap": prior_bias(0.01), "log_size": math.log(task.cfg.prior_size_px / stride)}


def centernet_losses(task: CameraTask, outputs: dict[str, Tensor], batch: Batch, channel_key: str,
                     num_channels: int, keep_key: str | None = None, min_keep: float = 0.0,
                     ) -> tuple[dict[str, Tensor], Any, Tensor]:
    """Shared CenterNet loss for box tasks. Returns ``(parts, encoded, present)``; ``parts`` has ``loss``.

    Normalised by the number of objects over present samples (CenterNet), so an absent sample changes
    neither the sum nor the normaliser."""
    heat = outputs["heatmap"]
    check_camera_output(task.name, heat, batch)
    present = present_index(batch, task.label, heat.device)
    if present.numel() == 0:
        zero = task.zero_loss(outputs)
        parts = {"loss": zero, "heatmap": zero.detach(), "offset": zero.detach(), "box": zero.detach()}
        return parts, None, present
    targets = [batch.labels[task.label][int(i)] for i in present]
    objects = []
    for t in targets:
        keep = torch.ones(len(t["boxes"]), dtype=torch.bool)
        if keep_key is not None and keep_key in t:
            keep = t[keep_key].float().cpu() >= min_keep
        objects.append((t["boxes"], t["camera"], t[channel_key], keep))
    n = heat.shape[1]
    h, w = heat.shape[-2:]
    stride = task.output_stride(heat, batch)
    image_hw = tuple(batch.images.shape[-2:])
    enc = encode_boxes2d(objects, n, num_channels, (h, w), stride, image_hw, task.cfg.min_overlap, heat.device,
                         task.cfg.min_radius)
    focal, num_pos = heatmap_focal_loss(heat[present].float(), enc.heatmap, enc.weight)
    norm = num_pos.clamp(min=1.0)
    hm_loss = focal / norm
    flat = enc.sample * n + enc.camera
    off = outputs["offset"][present].flatten(0, 1)[flat, :, enc.ys, enc.xs].float()
    size = outputs["log_size"][present].flatten(0, 1)[flat, :, enc.ys, enc.xs].float()
    off_loss = (off - enc.offset).abs().sum() / norm
    if task.cfg.box_loss == "giou":
        box_loss = giou_loss(pred_boxes_at(off, size, enc.ys, enc.xs), enc.box).sum() / norm
    else:
        box_loss = (size - enc.log_size).abs().sum() / norm
    cfg = task.cfg
    total = cfg.heatmap_weight * hm_loss + cfg.offset_weight * off_loss + cfg.size_weight * box_loss
    # Keep every output in the graph (DDP needs all head parameters used even with zero objects).
    total = total + task.zero_loss(outputs)
    parts = {"loss": total, "heatmap": hm_loss.detach(), "offset": off_loss.detach(), "box": box_loss.detach()}
    return parts, enc, present


@register_task
class Detection2D(CameraTask):
    name = "detection2d"
    # Stride 4 (CenterNet's output stride): objects in 128×256 cameras are ~10 px, so at stride 8 nearby
    # centres would share a cell. One shared 3×3 stem keeps it as cheap as stride 8 with per-output branches.
    preferred_stride = 4
    label = "detection2d"
    label_spec = LabelSpec("detection2d", "ragged", "boxes [M,4] (x1,y1,x2,y2 px), classes [M], camera [M], "
                           "visible [M], track_id [M]",
                           "float32/int64", "2D boxes per camera; visible = visible fraction 0..1",
                           fields=("boxes", "classes", "camera"), pixel_fields=("boxes",), vocabulary=OBJECT_CLASSES)
    Options = Detection2DOptions
    classes: tuple[str, ...] = OBJECT_CLASSES

    def build_head(self, ctx: HeadContext) -> nn.Module:
        self.num_cameras = ctx.num_cameras  # the metric reports AP per camera
        outputs = {"heatmap": len(self.classes), "offset": 2, "log_size": 2}
        return self.camera_head(ctx, outputs, bias_init=centernet_bias_init(self, ctx))

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
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
        check_camera_output(self.name, outputs["heatmap"], batch)
        result = []
        for b in range(len(batch)):
            d = self._decode_one(outputs, b, batch)
            result.append({"boxes": d.boxes.cpu(), "scores": d.scores.cpu(), "classes": d.channel.cpu(),
                           "camera": d.camera.cpu()})
        return result

    def make_metric(self) -> Metric:
        from hydranet.metrics import Detection2DMetric

        num_cameras = getattr(self, "num_cameras", None)
        if num_cameras is None:
            raise RuntimeError("detection2d: build_head(ctx) must run before make_metric (it fixes the camera count)")
        # Objects this task ignores in training (mostly hidden) are ignored in the metric too.
        return Detection2DMetric(classes=self.classes, num_cameras=num_cameras, min_visible=self.cfg.min_visible)

    def draw(self, views: Any, decoded: dict[str, Tensor], ground_truth: bool = False) -> None:
        from hydranet.viz import draw_boxes2d

        if decoded is not None and not ground_truth:
            decoded = above_threshold(decoded, self.cfg.draw_threshold)
        if decoded is None or len(decoded["boxes"]) == 0:
            return
        draw_boxes2d(views, decoded["boxes"], decoded["camera"], decoded["classes"],
                     color=GT_COLOR if ground_truth else PRED_COLOR,
                     scores=None if ground_truth else decoded.get("scores"))
