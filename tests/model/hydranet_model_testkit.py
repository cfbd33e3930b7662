"""Two small tasks (one camera, one BEV) registered under test-only names, so the model tests do not
depend on the real task implementations; plus a tiny model config and random inputs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydranet.data.sample import Batch
from hydranet.metrics import Metric
from hydranet.model import ModelConfig
from hydranet.setup import default_rig
from hydranet.tasks.base import TASKS, HeadContext, Task, register_task


class _MeanMetric(Metric):
    def __init__(self) -> None:
        self.values: list[float] = []

    def update(self, preds: list[Any], targets: list[Any]) -> None:
        self.values += [float((p == t).float().mean()) for p, t in zip(preds, targets, strict=True) if t is not None]

    def compute(self) -> dict[str, float]:
        return {"accuracy": sum(self.values) / max(len(self.values), 1)}

    def reset(self) -> None:
        self.values = []


class _CameraHead(nn.Module):
    def __init__(self, ctx: HeadContext):
        super().__init__()
        self.level = min(ctx.camera_strides, key=ctx.camera_strides.get)
        self.conv = nn.Conv2d(ctx.camera_channels, 1, 3, padding=1)

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"logits": self.conv(feats[self.level])}


class _BevHead(nn.Module):
    def __init__(self, ctx: HeadContext):
        super().__init__()
        self.conv = nn.Conv2d(ctx.bev_channels, 2, 1)

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        return {"logits": self.conv(bev)}


class _BinaryTask(Task):
    """Per-pixel binary segmentation against a uint8 label, at head resolution."""

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        logits = outputs["logits"]
        present = batch.present.get(self.label)
        if present is None or not bool(present.any()):
            return {"loss": self.zero_loss(outputs)}
        target = batch.labels[self.label][present].float()
        pred = logits[present].flatten(0, -4) if logits.ndim > 4 else logits[present]
        target = target.reshape(-1, *target.shape[-3:]) if self.space == "bev" else target.reshape(-1, 1,
                                                                                                  *target.shape[-2:])
        target = F.interpolate(target, size=pred.shape[-2:], mode="nearest")[:, : pred.shape[1]]
        return {"loss": F.binary_cross_entropy_with_logits(pred, target)}

    def decode(self, outputs: dict[str, Tensor], batch: Batch) -> list[Any]:
        return list(outputs["logits"].sigmoid() > 0.5)

    def make_metric(self) -> Metric:
        return _MeanMetric()

    def draw(self, views: Any, decoded: Any, ground_truth: bool = False) -> None:
        raise NotImplementedError("test task: no drawing")


@register_task
class TestCameraTask(_BinaryTask):
    name = "_model_test_camera"
    space = "camera"
    label = "drivable"

    def build_head(self, ctx: HeadContext) -> nn.Module:
        return _CameraHead(ctx)


@register_task
class TestBevTask(_BinaryTask):
    name = "_model_test_bev"
    space = "bev"
    label = "bev_semantic"

    def build_head(self, ctx: HeadContext) -> nn.Module:
        return _BevHead(ctx)


assert TASKS["_model_test_camera"] is TestCameraTask

CAM, BEV = "_model_test_camera", "_model_test_bev"


def tiny_config(tasks: tuple[str, ...] = (CAM, BEV), **overrides: Any) -> ModelConfig:
    """The "tiny" preset on a small image and a coarse BEV grid, so tests are fast."""
    data = {"setup": {"image_size": (64, 128), "grid": {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0),
                                                         "cell": 1.0}},
            "tasks": {t: {} for t in tasks}} | overrides
    return ModelConfig.preset("tiny", **data)


def rig_inputs(batch: int = 1, height: int = 64, width: int = 128, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random uint8 images and the default rig's K/T, ``[B, 8, ...]``."""
    rig = default_rig((height, width))
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, len(rig), 3, height, width), dtype=torch.uint8, generator=g)
    K = rig.intrinsics().expand(batch, -1, -1, -1).clone()
    T = rig.extrinsics().expand(batch, -1, -1, -1).clone()
    return images, K, T
