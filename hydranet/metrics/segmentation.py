"""Per-class IoU from streaming intersection/union counts (drivable space, BEV semantics).

Layouts (spatial dims are always the last two; a class dim, when there is one, sits just before):

- ``multilabel=True`` (e.g. ``bev_semantic`` ``[C, R, C']``): target ``[..., C, H, W]`` binary;
  prediction the same layout as probabilities (positive when ``>= threshold``) or a bool/int mask.
  With one class the class dim may be left out (``drivable`` ``[N, H, W]``).
- ``multilabel=False``: target holds class ids ``[..., H, W]``; prediction is class ids of the same
  shape, scores ``[..., C, h, w]`` (argmax), or — with exactly two classes — the probability of
  class 1 ``[..., h, w]`` (positive when ``>= threshold``). ``ignore_index`` pixels are not counted.
  In multi-label mode ``ignore_index`` marks unlabelled *elements* (a class channel a source does not
  label, e.g. drivable space without a map), which are not counted either.

A prediction whose spatial size differs from the target's is resized to it with nearest-neighbour
interpolation (``torch.nn.functional.interpolate(mode="nearest")``) before thresholding/argmax.
IoU_c = TP_c / (TP_c + FP_c + FN_c) summed over all frames (not a mean of per-frame IoUs); mIoU
is the mean over classes that occur in a prediction or a target (others are NaN).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hydranet.metrics.frames import FrameMetric, nanmean, safe_div


def to_tensor(x: Any, where: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{where}: expected a tensor, got {type(x).__name__}")
    return x


def resize_nearest(pred: Tensor, hw: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of the last two dims (any dtype, any leading dims)."""
    if tuple(pred.shape[-2:]) == tuple(hw):
        return pred
    lead = pred.shape[:-2]
    flat = pred.reshape(1, -1, *pred.shape[-2:])
    dtype = pred.dtype
    out = F.interpolate(flat.float(), size=tuple(hw), mode="nearest")
    return out.to(dtype).reshape(*lead, *hw)


class SegmentationIoU(FrameMetric):
    """``miou`` (headline) and ``iou/<class>``; per-frame state is three count vectors."""

    def __init__(self, classes: Sequence[str], multilabel: bool = False, threshold: float = 0.5,
                 ignore_index: int | None = None) -> None:
        self.classes = tuple(classes)
        self.multilabel = multilabel
        self.threshold = float(threshold)
        self.ignore_index = ignore_index
        super().__init__()

    def _masks(self, pred: Tensor, target: Tensor, where: str) -> tuple[Tensor, Tensor, Tensor | None]:
        """Bool one-hot ``[C, P]`` prediction and target, and an optional valid mask ``[P]``."""
        n_c = len(self.classes)
        hw = tuple(target.shape[-2:])
        if self.multilabel:
            if n_c == 1 and target.ndim == pred.ndim and (target.ndim < 3 or target.shape[-3] != 1):
                target, pred = target.unsqueeze(-3), pred.unsqueeze(-3)
            if target.ndim < 3 or target.shape[-3] != n_c:
                raise ValueError(f"{where}: multi-label target must be [..., C={n_c}, H, W], got {tuple(target.shape)}")
            if pred.shape[:-2] != target.shape[:-2]:
                raise ValueError(f"{where}: prediction {tuple(pred.shape)} does not match target "
                                 f"{tuple(target.shape)} outside the spatial dims")
            pred = resize_nearest(pred, hw)
            p = pred >= self.threshold if pred.is_floating_point() else pred != 0
            t = (target != 0) & (target != self.ignore_index) if self.ignore_index is not None else target != 0
            valid = None if self.ignore_index is None else (target != self.ignore_index).movedim(-3, 0).reshape(n_c, -1)
            return p.movedim(-3, 0).reshape(n_c, -1), t.movedim(-3, 0).reshape(n_c, -1), valid
        if target.is_floating_point():
            raise ValueError(f"{where}: single-label target must hold integer class ids, got {target.dtype}")
        if pred.is_floating_point() and pred.ndim == target.ndim + 1:
            if pred.shape[-3] != n_c:
                raise ValueError(f"{where}: scores must be [..., C={n_c}, h, w], got {tuple(pred.shape)}")
            ids = resize_nearest(pred, hw).argmax(dim=-3)
        elif pred.is_floating_point() and pred.ndim == target.ndim and n_c == 2:
            ids = (resize_nearest(pred, hw) >= self.threshold).long()
        elif not pred.is_floating_point() and pred.ndim == target.ndim:
            ids = resize_nearest(pred, hw).long()
        else:
            raise ValueError(f"{where}: prediction {tuple(pred.shape)} {pred.dtype} does not fit target "
                             f"{tuple(target.shape)} (see SegmentationIoU for accepted layouts)")
        if ids.shape != target.shape:
            raise ValueError(f"{where}: prediction {tuple(ids.shape)} vs target {tuple(target.shape)}")
        t = target.long().reshape(-1)
        ids = ids.reshape(-1)
        valid = None if self.ignore_index is None else t != self.ignore_index
        cls = torch.arange(n_c, device=t.device)[:, None]
        return ids[None] == cls, t[None] == cls, valid

    def frame_record(self, pred: Any, target: Any, where: str) -> np.ndarray:
        pred, target = to_tensor(pred, f"{where} prediction"), to_tensor(target, f"{where} target")
        p, t, valid = self._masks(pred.to(target.device), target, where)
        if valid is not None:
            p, t = p & valid, t & valid
        inter = (p & t).sum(1)
        union = (p | t).sum(1)
        gt = t.sum(1)
        return torch.stack([inter, union, gt]).cpu().numpy().astype(np.int64)  # [3, C]

    def counts(self, frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        recs = self.records(frames)
        return np.sum(recs, axis=0) if recs else np.zeros((3, len(self.classes)), np.int64)

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        inter, union, _ = self.counts(frames)
        iou = safe_div(inter, union)
        out = {"miou": nanmean(iou)}
        out.update({f"iou/{c}": float(v) for c, v in zip(self.classes, iou, strict=True)})
        return out
