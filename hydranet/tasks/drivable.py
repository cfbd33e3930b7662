"""Drivable-area segmentation per camera (binary).

Head: a conv stack on one FPN level (stride 4 by default) -> 1 logit per pixel at label resolution
(``upsample``: sub-pixel outputs by default, or bilinear interpolation of per-cell logits; see
``heads.DenseHeadOptions``).
Loss: BCE + soft dice per camera image (dice keeps a mostly-empty side camera from being ignored).
Decoded (per sample): uint8 mask ``[N, H, W]`` (same format as the label);
``probabilities()`` gives the float ``[N, H, W]`` probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from hydranet.data import Batch
from hydranet.metrics import Metric, SegmentationIoU
from hydranet.tasks.base import HeadContext, register_task
from hydranet.tasks.heads import CameraTask, DenseHeadOptions, check_camera_output, to_label_resolution
from hydranet.tasks.losses import of_present, present_index, soft_dice_loss
from hydranet.viz import DRIVABLE_COLOR, REGION_ALPHA, draw_mask


class DrivableOptions(DenseHeadOptions):
    """Options of ``drivable``: BCE and soft-dice weights, and the decode ``threshold`` on probability (0..1)."""

    bce_weight: float = 1.0
    dice_weight: float = 1.0
    threshold: float = Field(0.5, gt=0, lt=1)


@register_task
class Drivable(CameraTask):
    """Binary drivable-area segmentation per camera (see the module doc).

    Label ``drivable``: uint8 ``[N, H, W]``, 1 = drivable road. Metric: one-class ``SegmentationIoU``
    (IoU and Boundary IoU)."""

    name = "drivable"
    label = "drivable"
    Options = DrivableOptions

    def build_head(self, ctx: HeadContext) -> nn.Module:
        """Camera head with one ``logits`` channel, ``[B*N, 1, H/s, W/s]``."""
        return self.camera_head(ctx, {"logits": 1})

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss", "bce", "dice"}``: BCE + soft dice per camera image at label resolution, over present
        samples. Raises ``ValueError`` when ``logits`` is not an unfolded camera output ``[B, N, ...]``."""
        logits = outputs["logits"]
        check_camera_output(self.name, logits, batch)
        present = present_index(batch, self.label, logits.device)
        if present.numel() == 0:
            zero = self.zero_loss(outputs)
            return {"loss": zero, "bce": zero.detach(), "dice": zero.detach()}
        target = batch.labels[self.label][present.cpu()].to(logits.device).flatten(0, 1)[:, None].float()
        up = to_label_resolution(of_present(logits, present), tuple(target.shape[-2:]))
        bce = F.binary_cross_entropy_with_logits(up, target)
        dice = soft_dice_loss(torch.sigmoid(up), target)
        total = self.cfg.bce_weight * bce + self.cfg.dice_weight * dice
        return {"loss": total, "bce": bce.detach(), "dice": dice.detach()}

    @torch.no_grad()
    def probabilities(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample float32 ``[N, H, W]`` drivable probability."""
        logits = outputs["logits"]
        check_camera_output(self.name, logits, batch)
        hw = tuple(batch.images.shape[-2:])
        prob = torch.sigmoid(to_label_resolution(logits, hw))[:, 0].float()
        return list(prob.reshape(logits.shape[0], logits.shape[1], *hw).cpu())

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample uint8 mask ``[N, H, W]`` (label format): probability >= ``threshold``."""
        return [(p >= self.cfg.threshold).to(torch.uint8) for p in self.probabilities(outputs, batch)]

    def make_metric(self) -> Metric:
        """One-class ``SegmentationIoU``: its ``miou`` is the drivable IoU."""
        # One class, no class dim: the headline ``miou`` is the drivable IoU itself.
        return SegmentationIoU(classes=("drivable",), multilabel=True)

    def draw(self, views: Any, decoded: Tensor, ground_truth: bool = False) -> None:
        """The mask in ``DRIVABLE_COLOR`` over the cameras, the same colour for ground truth and prediction."""
        if decoded is None:
            return
        draw_mask(views, decoded.bool(), DRIVABLE_COLOR, REGION_ALPHA)  # the same class colour in both panels
