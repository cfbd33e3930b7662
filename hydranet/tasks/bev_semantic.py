"""BEV semantic / occupancy map from all cameras: multi-label ``BEV_CLASSES`` on the ``BevGrid``.

Multi-label because classes overlap on the ground plane (a lane marking lies on drivable road, a car
stands on it). Head: a conv stack on the fused BEV features -> one logit per class per cell. The fused
BEV features must be on the label's grid: ``logits_on_grid`` raises ``ValueError`` on any size mismatch
(data and model disagree on the ``BevGrid``) rather than resample.
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

from hydranet.data import BEV_CLASSES, Batch
from hydranet.metrics import Metric, SegmentationIoU
from hydranet.tasks.base import HeadContext, Task, register_task
from hydranet.tasks.heads import BevHead, BevHeadOptions, prior_bias
from hydranet.tasks.losses import binary_focal_loss, of_present, present_index, soft_dice_loss
from hydranet.viz import GROUND_TRUTH_BEV, draw_bev_map


class BevSemanticOptions(BevHeadOptions):
    """Options of ``bev_semantic``: the dense term (``bce``, or RetinaNet ``focal`` for very sparse classes)
    and its weight, the soft-dice weight, and the decode ``threshold`` on per-class probability (0..1)."""

    loss: Literal["bce", "focal"] = "bce"
    bce_weight: float = 1.0  # weight of the BCE or focal term
    dice_weight: float = 1.0
    threshold: float = Field(0.5, gt=0, lt=1)


def logits_on_grid(logits: Tensor, rc: tuple[int, int]) -> Tensor:
    """``logits`` unchanged when they are on the label grid ``rc``; a label grid of another size is an
    error (``ValueError`` naming both), never a silent resample: it means data and model disagree on
    the ``BevGrid`` (``hydranet.setup.check_fits`` refuses that at config time)."""
    if tuple(logits.shape[-2:]) != tuple(rc):
        raise ValueError(f"bev_semantic: label grid is {tuple(rc)} cells but the model predicts "
                         f"{tuple(logits.shape[-2:])}: the data's BEV grid differs from setup.grid")
    return logits


def outline(masks: Tensor) -> Tensor:
    """Boundary cells of binary maps ``[C, R, C']``: set cells with an unset 8-neighbour."""
    m = torch.as_tensor(masks).float()[None]
    eroded = -F.max_pool2d(-m, 3, stride=1, padding=1)
    return (m - eroded)[0].clamp(0, 1)


@register_task
class BevSemantic(Task):
    """Multi-label BEV semantic map over ``BEV_CLASSES`` on the ``BevGrid`` (see the module doc).

    Label ``bev_semantic``: uint8 ``[C, R, C']`` 0/1 per sample, optionally with ``bev_semantic_known``
    (which channels a source labels). Metric: multi-label ``SegmentationIoU``, headline ``miou``."""

    name = "bev_semantic"
    space = "bev"
    label = "bev_semantic"
    Options = BevSemanticOptions
    classes: tuple[str, ...] = BEV_CLASSES

    def build_head(self, ctx: HeadContext) -> nn.Module:
        """A ``BevHead`` on the fused BEV features ``[B, C_bev, R, C']`` -> ``{"logits": [B, C, R, C']}``, one
        logit per class and cell, bias at prior 0.05."""
        return BevHead(ctx, {"logits": len(self.classes)}, self.cfg.width, self.cfg.depth, self.cfg.branch_depth,
                       bias_init={"logits": prior_bias(0.05)})

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss", "dense", "dice"}``: BCE (or focal) + soft dice per class map over present samples;
        channels that a sample's source does not label contribute nothing.

        Raises ``ValueError`` when logits are not ``[B, C, R, C']``, when the label's class count differs
        from the head's, or when the label grid differs from the predicted one."""
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
        x = logits_on_grid(of_present(logits, present), tuple(target.shape[-2:])).float()
        known = self.known_channels(batch, present.cpu(), target.shape[1]).to(logits.device)  # [S, C]
        if bool(known.all()):
            if self.cfg.loss == "focal":
                dense = binary_focal_loss(x, target).mean()
            else:
                dense = F.binary_cross_entropy_with_logits(x, target)
            dice = soft_dice_loss(torch.sigmoid(x), target)
        else:  # channels a source does not label (no map: drivable, lanes) contribute nothing
            el = binary_focal_loss(x, target) if self.cfg.loss == "focal" else \
                F.binary_cross_entropy_with_logits(x, target, reduction="none")
            w = known.float()
            n = w.sum().clamp(min=1.0)
            dense = (el.mean((2, 3)) * w).sum() / n
            prob = torch.sigmoid(x)
            inter = (prob * target).flatten(2).sum(-1)
            denom = prob.flatten(2).sum(-1) + target.flatten(2).sum(-1)
            dice = ((1 - (2 * inter + 1.0) / (denom + 1.0)) * w).sum() / n
        total = self.cfg.bce_weight * dense + self.cfg.dice_weight * dice
        return {"loss": total, "dense": dense.detach(), "dice": dice.detach()}

    def known_channels(self, batch: Batch, rows: Tensor, num_classes: int) -> Tensor:
        """Bool ``[S, C]``: which channels of the selected samples are labelled (``bev_semantic_known``;
        samples without it have every channel labelled)."""
        known = torch.ones(len(rows), num_classes, dtype=torch.bool)
        if "bev_semantic_known" in batch.labels:
            has = batch.present["bev_semantic_known"][rows].cpu()
            k = batch.labels["bev_semantic_known"][rows].cpu() != 0
            known[has] = k[has]
        return known

    def targets(self, batch: Batch) -> list[Any]:
        """Label maps with unlabelled channels set to 255 (ignored by the metric)."""
        out = super().targets(batch)
        if "bev_semantic_known" not in batch.labels:
            return out
        for i, t in enumerate(out):
            if t is not None and bool(batch.present["bev_semantic_known"][i]):
                unknown = batch.labels["bev_semantic_known"][i].cpu() == 0
                if bool(unknown.any()):
                    t = t.clone()
                    t[unknown.to(t.device)] = 255
                    out[i] = t
        return out

    @torch.no_grad()
    def probabilities(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample float32 ``[C, R, C']`` probabilities on the label grid."""
        logits = outputs["logits"]
        rc = batch.labels[self.label].shape[-2:] if self.label in batch.labels else logits.shape[-2:]
        return list(torch.sigmoid(logits_on_grid(logits, tuple(rc)).float()).cpu())

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample uint8 ``[C, R, C']`` 0/1 map (label format): probability >= ``threshold``."""
        return [(p >= self.cfg.threshold).to(torch.uint8) for p in self.probabilities(outputs, batch)]

    def make_metric(self) -> Metric:
        """Multi-label ``SegmentationIoU`` over ``BEV_CLASSES``; 255 (unlabelled channel, ``targets``) is ignored."""
        return SegmentationIoU(classes=self.classes, multilabel=True, ignore_index=255)

    def draw(self, views: Any, decoded: Tensor, ground_truth: bool = False) -> None:
        """Prediction as filled class colours, ground truth as class-coloured outlines, in the BEV panel of
        ``views``; ``None`` (label absent) draws nothing."""
        if decoded is None:
            return
        if ground_truth:
            # Ground truth as class-coloured outlines, so it reads on top of a filled prediction.
            draw_bev_map(views, outline(decoded), self.classes, alpha=1.0)
            if getattr(views, "truth_over_predictions", False):  # only then is a filled prediction under it
                views.note(GROUND_TRUTH_BEV)
        else:
            draw_bev_map(views, decoded, self.classes)
