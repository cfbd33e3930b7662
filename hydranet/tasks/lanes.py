"""Lane-line segmentation per camera: ``LANE_KINDS`` = none, dashed, solid, road edge.

Head: a conv stack on stride 4 -> 4 logits per pixel at label resolution (``upsample``: sub-pixel
outputs by default, or bilinear interpolation of per-cell logits; lines are 1-3 px wide, so downsampling
the label instead would erase them).
Loss: class-weighted cross-entropy (lines are a few % of pixels; ``class_weights`` lifts them) plus an
optional soft dice over the line classes, which rewards overlap rather than pixel counts.
Decoded (per sample): a marking where P(none) <= 1 - ``threshold``, of its likeliest kind; uint8 class
mask ``[N, H, W]`` (label format); ``probabilities()`` gives
float ``[N, 4, H, W]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from hydranet.data import LANE_KINDS, Batch
from hydranet.metrics import LaneF1, Metric
from hydranet.tasks.base import HeadContext, register_task
from hydranet.tasks.heads import CameraTask, DenseHeadOptions, check_camera_output, to_label_resolution
from hydranet.tasks.losses import class_dice_loss, of_present, present_index
from hydranet.viz import LANE_ALPHA, LANE_COLORS, draw_mask

# Line colours for drawing: predictions saturated, ground truth pale (same hue per kind).


class LanesOptions(DenseHeadOptions):
    """Options of ``lanes``: per-kind cross-entropy ``class_weights`` (one per ``LANE_KINDS``, >= 0, else a
    ``ValueError`` from the task), CE and dice weights, and the decode ``threshold`` on P(any marking)."""

    # Markings are ~3 % of pixels: with weight 5 the head learnt to predict none at all (F1 0 in the
    # demo); ~1/frequency puts lines and background on an equal footing.
    class_weights: list[float] = Field(default_factory=lambda: [1.0, 20.0, 20.0, 20.0])
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    # Decode: a pixel is a marking when P(any marking) = 1 - P(none) >= threshold, of the most likely
    # kind. Asking "marking?" before "which kind?" keeps a line whose mass is split between kinds.
    threshold: float = Field(0.5, gt=0, lt=1)

    @field_validator("class_weights")
    @classmethod
    def _one_per_kind(cls, v: list[float]) -> list[float]:
        if len(v) != len(LANE_KINDS) or any(w < 0 for w in v):
            raise ValueError(f"need {len(LANE_KINDS)} non-negative weights (one per {LANE_KINDS}), got {v}")
        return v


@register_task
class Lanes(CameraTask):
    """Lane-line segmentation per camera into ``LANE_KINDS`` (see the module doc).

    Label ``lanes``: uint8 ``[N, H, W]``, 0 none, 1 dashed, 2 solid, 3 road edge. Metric: ``LaneF1``
    (F1 with a 2 px tolerance)."""

    name = "lanes"
    label = "lanes"
    Options = LanesOptions
    kinds: tuple[str, ...] = LANE_KINDS

    def build_head(self, ctx: HeadContext) -> nn.Module:
        """Camera head with ``logits`` for the 4 kinds per cell, ``[B*N, 4, H/s, W/s]``."""
        return self.camera_head(ctx, {"logits": len(self.kinds)})

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss", "ce", "dice"}``: class-weighted cross-entropy + soft dice over the line kinds, at label
        resolution, over present samples.

        Raises ``ValueError`` on outputs that are not ``[B, N, ...]`` or a label class >= 4."""
        logits = outputs["logits"]
        check_camera_output(self.name, logits, batch)
        present = present_index(batch, self.label, logits.device)
        if present.numel() == 0:
            zero = self.zero_loss(outputs)
            return {"loss": zero, "ce": zero.detach(), "dice": zero.detach()}
        target = batch.labels[self.label][present.cpu()].to(logits.device).flatten(0, 1).long()
        if int(target.max()) >= len(self.kinds):
            raise ValueError(f"lanes label holds class {int(target.max())}; kinds are {self.kinds}")
        up = to_label_resolution(of_present(logits, present), tuple(target.shape[-2:])).float()
        weight = torch.tensor(self.cfg.class_weights, device=up.device, dtype=up.dtype)
        log_prob = F.log_softmax(up, 1)
        ce = F.nll_loss(log_prob, target, weight=weight)  # = cross_entropy, sharing the softmax with dice
        dice = class_dice_loss(log_prob.exp(), target, first=1)
        total = self.cfg.ce_weight * ce + self.cfg.dice_weight * dice
        return {"loss": total, "ce": ce.detach(), "dice": dice.detach()}

    @torch.no_grad()
    def probabilities(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample float32 ``[N, K, H, W]`` class probabilities."""
        logits = outputs["logits"]
        check_camera_output(self.name, logits, batch)
        hw = tuple(batch.images.shape[-2:])
        prob = to_label_resolution(logits, hw).float().softmax(1)
        return list(prob.reshape(*logits.shape[:3], *hw).cpu())

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample uint8 kind ids ``[N, H, W]`` (label format): the likeliest line kind where
        P(none) <= 1 - ``threshold``, else 0."""
        decoded = []
        for prob in self.probabilities(outputs, batch):  # [N, K, H, W] per sample
            kind = prob[:, 1:].argmax(1) + 1
            decoded.append(torch.where(prob[:, 0] <= 1 - self.cfg.threshold, kind, 0).to(torch.uint8))
        return decoded

    def make_metric(self) -> Metric:
        """``LaneF1``: micro F1 over the line kinds with a 2 px tolerance, plus per kind."""
        return LaneF1()

    def draw(self, views: Any, decoded: Tensor, ground_truth: bool = False) -> None:
        """Each kind's pixels in its ``LANE_COLORS`` colour over the cameras (one palette for both panels)."""
        if decoded is None:
            return
        for kind, color in LANE_COLORS.items():  # one palette for labels and predictions: the panel tells them apart
            mask = decoded == kind
            if bool(mask.any()):
                draw_mask(views, mask, color, LANE_ALPHA)
