"""CenterNet-style 2D boxes per camera, shared by ``detection2d`` and ``traffic_light``: options, box
coding, the loss and the head's bias initialisation.

An object is a Gaussian peak on its channel's heatmap at the cell holding its box centre, plus a
sub-cell ``offset`` (2) and a ``log_size`` (log of width and height in cells) read at that cell
(Zhou et al., "Objects as Points", 2019). Boxes are clipped to the image first, so the peak is the
centre of the *visible* box and always lies on the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from hydranet.data import Batch
from hydranet.tasks.base import HeadContext
from hydranet.tasks.heads import CameraHeadOptions, CameraTask, check_camera_output, choose_stride, prior_bias
from hydranet.tasks.heatmaps import draw_gaussian, gaussian_radius, heatmap_focal_loss, topk_peaks
from hydranet.tasks.losses import giou_loss, of_present, present_index

# Log-size logits are clamped before exp so an untrained head cannot produce inf boxes.
_LOG_SIZE_RANGE = (-6.0, 8.0)


@dataclass
class Encoded2D:
    """Targets of the present samples (``S`` of them) in a stride-``s`` map ``h × w``."""

    heatmap: Tensor  # [S, N, C, h, w] Gaussian peaks
    weight: Tensor  # [S, N, 1, h, w] 0 inside ignored objects (e.g. mostly occluded), else 1
    sample: Tensor  # [M] index into the present subset
    camera: Tensor  # [M]
    ys: Tensor  # [M] peak cell row
    xs: Tensor  # [M] peak cell column
    offset: Tensor  # [M, 2] sub-cell centre offset in [0, 1)
    log_size: Tensor  # [M, 2] log(width, height) in cells
    box: Tensor  # [M, 4] x1, y1, x2, y2 in cells
    object_index: Tensor  # [M] index of the object within its sample's label (to fetch extra attributes)


def clip_boxes(boxes: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Boxes ``[..., 4]`` (x1, y1, x2, y2, pixels) clamped to the image ``(H, W)``: x to [0, W], y to [0, H]."""
    h, w = image_hw
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def encode_boxes2d(objects: list[tuple[Tensor, Tensor, Tensor, Tensor]], num_cameras: int, num_channels: int,
                   feat_hw: tuple[int, int], stride: int, image_hw: tuple[int, int],
                   min_overlap: float = 0.7, device: torch.device | str = "cpu", min_radius: int = 0) -> Encoded2D:
    """``objects[s] = (boxes [M,4] px, camera [M], channel [M], keep [M] bool)`` per present sample.

    Objects with ``keep`` False are not learnt and their box area is excluded from the heatmap loss
    (neither positive nor negative): the model is not punished for finding a hard object.
    ``min_radius`` (cells) floors the Gaussian radius: small objects would otherwise get radius 0, one
    positive cell whose neighbours are full-strength negatives (CenterPoint floors at 2 for the same reason)."""
    h, w = feat_hw
    S = len(objects)
    heat = torch.zeros(S, num_cameras, num_channels, h, w)
    weight = torch.ones(S, num_cameras, 1, h, w)
    rows: dict[str, list] = {k: [] for k in ("sample", "camera", "ys", "xs", "offset", "log_size", "box", "obj")}
    for s, (boxes, camera, channel, keep) in enumerate(objects):
        if not bool(torch.isfinite(boxes).all()):  # int() of a NaN coordinate would fail deep in the loop
            raise ValueError(f"present sample {s}: its 2D boxes hold non-finite coordinates (NaN or inf)")
        boxes = clip_boxes(boxes.detach().float().cpu(), image_hw) / stride
        # Per-object values as Python numbers, computed once per sample: a per-object tensor op costs more than
        # the arithmetic (the radius is the same float32 arithmetic, element-wise).
        radii = gaussian_radius(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0], min_overlap).tolist()
        cameras, channels, keeps = camera.long().tolist(), channel.long().tolist(), keep.bool().tolist()
        for m, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            cam = cameras[m]
            if not 0 <= cam < num_cameras:
                raise ValueError(f"box {m} of present sample {s}: camera {cam} outside [0, {num_cameras})")
            bw, bh = x2 - x1, y2 - y1
            if bw <= 0 or bh <= 0:
                continue  # fully outside the image
            if not keeps[m]:
                weight[s, cam, 0, int(y1):max(int(y1) + 1, int(y2 + 0.999)),
                       int(x1):max(int(x1) + 1, int(x2 + 0.999))] = 0.0
                continue
            ch = channels[m]
            if not 0 <= ch < num_channels:
                raise ValueError(f"box {m} of present sample {s}: class/state {ch} outside [0, {num_channels})")
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            radius = max(min_radius, int(radii[m]))
            draw_gaussian(heat[s, cam, ch], ix, iy, radius)
            rows["sample"].append(s)
            rows["camera"].append(cam)
            rows["ys"].append(iy)
            rows["xs"].append(ix)
            rows["offset"].append((cx - ix, cy - iy))
            rows["log_size"].append((max(bw, 1e-3), max(bh, 1e-3)))
            rows["box"].append((x1, y1, x2, y2))
            rows["obj"].append(m)
    # An ignored object's area never hides another object's peak.
    weight = torch.maximum(weight, heat.amax(2, keepdim=True).ge(1.0).float())
    long = {"dtype": torch.long}

    def t(key: str, shape: tuple[int, ...] = (0,), **kw) -> Tensor:
        return torch.tensor(rows[key], **kw).reshape(-1, *shape[1:]).to(device)

    return Encoded2D(
        heatmap=heat.to(device), weight=weight.to(device), sample=t("sample", **long), camera=t("camera", **long),
        ys=t("ys", **long), xs=t("xs", **long), offset=t("offset", (0, 2)), log_size=t("log_size", (0, 2)).log(),
        box=t("box", (0, 4)), object_index=t("obj", **long))


def pred_boxes_at(offset: Tensor, log_size: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """Boxes ``[M, 4]`` in cells from offsets ``[M, 2]`` and log sizes ``[M, 2]`` read at cells (ys, xs)."""
    cx = xs.to(offset.dtype) + offset[:, 0]
    cy = ys.to(offset.dtype) + offset[:, 1]
    size = log_size.clamp(*_LOG_SIZE_RANGE).exp()
    return torch.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2, cx + size[:, 0] / 2, cy + size[:, 1] / 2], -1)


@dataclass
class Decoded2D:
    """One sample's detections over all its cameras, best first."""

    boxes: Tensor  # [K, 4] px
    scores: Tensor  # [K]
    channel: Tensor  # [K] class or state
    camera: Tensor  # [K]
    ys: Tensor  # [K] peak cells, to read extra per-object outputs
    xs: Tensor  # [K]


def decode_boxes2d(heat_logits: Tensor, offset: Tensor, log_size: Tensor, stride: int, image_hw: tuple[int, int],
                   max_detections: int, score_threshold: float, kernel: int = 3) -> Decoded2D:
    """One sample: ``heat_logits [N, C, h, w]``, ``offset``/``log_size [N, 2, h, w]`` -> ``Decoded2D``.

    Max-pool NMS and top-k run per camera (a crowded camera cannot starve the others), then the
    survivors above ``score_threshold`` are merged and capped at ``max_detections`` per sample."""
    heat = torch.sigmoid(heat_logits.float())
    scores, channel, ys, xs = topk_peaks(heat, max_detections, kernel)  # [N, k]
    n, k = scores.shape
    camera = torch.arange(n, device=scores.device)[:, None].expand(n, k)
    scores, channel, ys, xs, camera = (t.reshape(-1) for t in (scores, channel, ys, xs, camera))
    keep = scores >= score_threshold
    scores, channel, ys, xs, camera = scores[keep], channel[keep], ys[keep], xs[keep], camera[keep]
    order = scores.argsort(descending=True)[:max_detections]
    scores, channel, ys, xs, camera = scores[order], channel[order], ys[order], xs[order], camera[order]
    off = offset[camera, :, ys, xs].float()
    size = log_size[camera, :, ys, xs].float()
    boxes = clip_boxes(pred_boxes_at(off, size, ys, xs) * stride, image_hw)
    return Decoded2D(boxes=boxes, scores=scores, channel=channel, camera=camera, ys=ys, xs=xs)


class CenterNet2DOptions(CameraHeadOptions):
    """Options shared by the CenterNet box tasks: Gaussian ``min_overlap``/``min_radius`` (cells), the
    initial box size ``prior_size_px``, ``box_loss`` (L1 on log size, or GIoU) and the loss weights,
    decode ``max_detections``, ``score_threshold``, ``draw_threshold`` and ``nms_kernel``."""

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


def centernet_bias_init(task: CameraTask, ctx: HeadContext) -> dict[str, float]:
    """Heatmaps start at the focal prior 0.01 (RetinaNet §4.1), log sizes at ``prior_size_px``."""
    stride = choose_stride(ctx, task.cfg.stride, task.preferred_stride)
    return {"heatmap": prior_bias(0.01), "log_size": math.log(task.cfg.prior_size_px / stride)}


def centernet_losses(task: CameraTask, outputs: dict[str, Tensor], batch: Batch, channel_key: str | None,
                     num_channels: int, keep_key: str | None = None, min_keep: float = 0.0,
                     ) -> tuple[dict[str, Tensor], Any, Tensor]:
    """Shared CenterNet loss for box tasks. Returns ``(parts, encoded, present)``; ``parts`` has ``loss``.

    ``channel_key`` names the label field holding each object's heatmap channel (its class); ``None``
    puts every object on channel 0 (one class-agnostic heatmap).

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
        channel = t[channel_key] if channel_key is not None else torch.zeros(len(t["boxes"]), dtype=torch.long)
        objects.append((t["boxes"], t["camera"], channel, keep))
    n = heat.shape[1]
    h, w = heat.shape[-2:]
    stride = task.output_stride(heat, batch)
    image_hw = tuple(batch.images.shape[-2:])
    enc = encode_boxes2d(objects, n, num_channels, (h, w), stride, image_hw, task.cfg.min_overlap, heat.device,
                         task.cfg.min_radius)
    focal, num_pos = heatmap_focal_loss(of_present(heat, present).float(), enc.heatmap, enc.weight)
    norm = num_pos.clamp(min=1.0)
    hm_loss = focal / norm
    flat = enc.sample * n + enc.camera
    off = of_present(outputs["offset"], present).flatten(0, 1)[flat, :, enc.ys, enc.xs].float()
    size = of_present(outputs["log_size"], present).flatten(0, 1)[flat, :, enc.ys, enc.xs].float()
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
