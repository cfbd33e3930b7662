"""BEV semantic / occupancy map from all cameras: multi-label ``BEV_CLASSES`` on the ``BevGrid``.

Multi-label because classes overlap on the ground plane (a lane marking lies on drivable road, a car
stands on it). Head: a conv stack on the fused BEV features -> one logit per class per cell; if the
BEV features are coarser than the grid, logits are upsampled to the label's grid.
Loss: per-cell BCE (or RetinaNet focal, for very sparse classes) + soft dice per class map; dice keeps
small classes (pedestrians, cones: a handful of cells) from being swamped by road.
Decoded (per sample): uint8 ``[C, R, C']`` 0/1 (label format); ``probabilities()`` gives float.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from hydranet.data.sample import BEV_CLASSES, Batch
from hydranet.metrics import Metric, SegmentationIoU
from hydranet.tasks.base import HeadContext, register_task
from hydranet.tasks.common import (
    BevHead,
    BevHeadOptions,
    OptionsTask,
    binary_focal_loss,
    present_index,
    prior_bias,
    soft_dice_loss,
)
from hydranet.viz import draw_bev_map


class BevSemanticOptions(BevHeadOptions):
    loss: Literal["bce", "focal"] = "bce"
    bce_weight: float = 1.0  # weight of the BCE or focal term
    dice_weight: float = 1.0
    threshold: float = Field(0.5, gt=0, lt=1)


def logits_on_grid(logits: Tensor, rc: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(rc):
        return logits
    return F.interpolate(logits.float(), size=rc, mode="bilinear", align_corners=False)


def outline(masks: Tensor) -> Tensor:
    """Boundary cells of binary maps ``[C, R, C']``: set cells with an unset 8-neighbour."""
    m = torch.as_tensor(masks).float()[None]
    eroded = -F.max_pool2d(-m, 3, stride=1, padding=1)
    return (m - eroded)[0].clamp(0, 1)


@register_task
class BevSemantic(OptionsTask):
    name = "bev_semantic"
    space = "bev"
    label = "bev_semantic"
    Options = BevSemanticOptions
    classes: tuple[str, ...] = BEV_CLASSES

    def build_head(self, ctx: HeadContext) -> nn.Module:
        self.grid = ctx.grid
        return BevHead(ctx, {"logits": len(self.classes)}, self.cfg.width, self.cfg.depth, self.cfg.branch_depth,
                       bias_init={"logits": prior_bias(0.05)})

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        logits = outputs["logits"]
        if logits.ndim != 4 or logits.shape[0] != len(batch):
            raise ValueError(f"{self.name}: expected [B={len(batch)}, C, R, C'] logits, got {tuple(logits.shape)}")
        present = present_index(batch, self.label, logits.device)
        if present.numel() == 0:
            zero = self.zero_loss(outputs)
            return {"loss": zero, "dense": zero.detach(), "dice": zero.detach()}
        target = batch.labels[self.label][present.cpu()].to(logits.device).float()
        if target.shape[1] != logits.shape[1]:
            raise ValueError(f"{self.name}: label has {target.shape[1]} classes, head predicts {logits.shape[1]} "
                             f"({self.classes})")
        x = logits_on_grid(logits[present], tuple(target.shape[-2:])).float()
        if self.cfg.loss == "focal":
            dense = binary_focal_loss(x, target).mean()
        else:
            dense = F.binary_cross_entropy_with_logits(x, target)
        dice = soft_dice_loss(torch.sigmoid(x), target)
        total = self.cfg.bce_weight * dense + self.cfg.dice_weight * dice
        return {"loss": total, "dense": dense.detach(), "dice": dice.detach()}

    @torch.no_grad()
    def probabilities(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample float32 ``[C, R, C']`` probabilities on the label grid."""
        logits = outputs["logits"]
        rc = batch.labels[self.label].shape[-2:] if self.label in batch.labels else logits.shape[-2:]
        return list(torch.sigmoid(logits_on_grid(logits, tuple(rc)).float()).cpu())

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        return [(p >= self.cfg.threshold).to(torch.uint8) for p in self.probabilities(outputs, batch)]

    def make_metric(self) -> Metric:
        return SegmentationIoU(classes=self.classes, multilabel=True)

    def draw(self, views: Any, decoded: Tensor, ground_truth: bool = False) -> None:
        if decoded is None:
            return
        if ground_truth:
            # Ground truth as class-coloured outlines, so it reads on top of a filled prediction.
            draw_bev_map(views, outline(decoded), self.classes, alpha=1.0)
        else:
            draw_bev_map(views, decoded, self.classes)
