"""Dense depth per camera, predicted as log z-depth.

Log depth makes a 10 % error cost the same at 5 m and at 80 m, which matches how depth errors are
judged (AbsRel, δ<1.25). The head's bias starts at log(``init_depth``) so training begins at a
plausible scale. The log-depth map reaches label resolution (``upsample``: sub-pixel outputs by default,
or bilinear interpolation), so no label pixel is pooled away and the loss scores exactly what ``decode``
returns.
Loss (pixels with label 0 = no return / sky are masked out):
- ``silog``: scale-invariant log loss (Eigen et al. 2014), ``sqrt(mean g² - λ mean(g)²)`` per camera
  image with ``g = log pred - log gt``; λ < 1 keeps some absolute-scale supervision.
- ``l1_log``: mean |log pred - log gt|.
Decoded (per sample): float32 metres ``[N, H, W]``, clamped to [``min_depth``, ``max_depth``].
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from hydranet.data import Batch
from hydranet.metrics import DepthMetric, Metric
from hydranet.tasks.base import HeadContext, register_task
from hydranet.tasks.heads import CameraTask, DenseHeadOptions, check_camera_output, to_label_resolution
from hydranet.tasks.losses import of_present, present_index
from hydranet.viz import draw_depth


class DepthOptions(DenseHeadOptions):
    """Options of ``depth``: the loss (``silog`` with ``silog_lambda`` in [0, 1], or ``l1_log``), the clamp
    range ``min_depth``..``max_depth`` (m) of targets and decoded depth, and ``init_depth`` (m), the depth
    the head's bias starts at."""

    loss: Literal["silog", "l1_log"] = "silog"
    silog_lambda: float = Field(0.85, ge=0, le=1)
    min_depth: float = Field(0.5, gt=0)
    max_depth: float = Field(250.0, gt=0)  # the synthetic world's sensor range (WorldConfig.max_depth)
    init_depth: float = Field(10.0, gt=0)


@register_task
class Depth(CameraTask):
    """Dense z-depth per camera in metres, predicted as log depth (see the module doc).

    Label ``depth``: float32 ``[N, H, W]`` metres along the camera axis, 0 = no return. Metric:
    ``DepthMetric``, headline AbsRel (lower is better)."""

    name = "depth"
    label = "depth"
    higher_is_better = False  # headline metric is AbsRel
    Options = DepthOptions

    def build_head(self, ctx: HeadContext) -> nn.Module:
        """Camera head with one ``log_depth`` channel, ``[B*N, 1, H/s, W/s]``, bias log(``init_depth``)."""
        return self.camera_head(ctx, {"log_depth": 1}, bias_init={"log_depth": math.log(self.cfg.init_depth)})

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss", <loss name>}``: SILog (Eigen et al. 2014) or L1 on log depth at label resolution, over
        pixels with a return (label > 0) of present samples; camera images with no return are left out.

        Raises ``ValueError`` when ``log_depth`` is not an unfolded camera output ``[B, N, ...]``."""
        log_depth = outputs["log_depth"]
        check_camera_output(self.name, log_depth, batch)
        present = present_index(batch, self.label, log_depth.device)
        if present.numel() == 0:
            return {"loss": self.zero_loss(outputs)}
        target = batch.labels[self.label][present.cpu()].to(log_depth.device).flatten(0, 1)[:, None].float()
        pred = to_label_resolution(of_present(log_depth, present), tuple(target.shape[-2:])).float()
        valid = (target > 0).float()
        g = (pred - target.clamp(self.cfg.min_depth, self.cfg.max_depth).log()) * valid
        n = valid.sum((1, 2, 3))
        images = n > 0  # camera images with at least one depth return
        if not bool(images.any()):
            return {"loss": self.zero_loss(outputs)}
        n = n[images]
        if self.cfg.loss == "silog":
            mean_g = g.sum((1, 2, 3))[images] / n
            mean_g2 = (g**2).sum((1, 2, 3))[images] / n
            # eps keeps sqrt differentiable at a perfect fit; clamp guards float cancellation.
            per_image = (mean_g2 - self.cfg.silog_lambda * mean_g**2).clamp(min=0) + 1e-6
            value = per_image.sqrt().mean()
        else:
            value = (g.abs().sum((1, 2, 3))[images] / n).mean()
        return {"loss": value + self.zero_loss(outputs), self.cfg.loss: value.detach()}

    @torch.no_grad()
    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Tensor]:
        """Per sample float32 depth ``[N, H, W]`` in metres at image resolution, clamped to
        [``min_depth``, ``max_depth``]. Raises ``ValueError`` on outputs that are not ``[B, N, ...]``."""
        log_depth = outputs["log_depth"]
        check_camera_output(self.name, log_depth, batch)
        hw = tuple(batch.images.shape[-2:])
        depth = to_label_resolution(log_depth, hw).float().exp().clamp(self.cfg.min_depth, self.cfg.max_depth)
        return list(depth.reshape(*log_depth.shape[:2], *hw).cpu())

    def make_metric(self) -> Metric:
        """``DepthMetric``: AbsRel (headline), RMSE (m) and δ<1.25, overall and per distance bin."""
        return DepthMetric()

    def draw(self, views: Any, decoded: Tensor, ground_truth: bool = False) -> None:
        """Depth in metres over the cameras on the one log scale every depth picture shares (``draw_depth``:
        colour bar in metres in the legend), so prediction and ground truth compare pixel by pixel; label 0
        (sky, no return) stays clear."""
        if decoded is None:
            return
        draw_depth(views, decoded)
