"""Lane-marking F1 with a pixel tolerance, from streaming counts.

Matching rule: a predicted pixel of kind k (dashed, solid, road edge) is a true positive when a
ground-truth pixel of the same kind lies within ``tolerance_px`` (Chebyshev distance, i.e. inside
the (2t+1)×(2t+1) square, computed by max-pool dilation); precision = TP predicted pixels / all
predicted pixels. Recall is symmetric: a ground-truth pixel counts as found when a predicted pixel
of its kind lies within the tolerance. F1 = 2PR/(P+R). Counts are summed over kinds for the
headline ``f1`` (micro average); ``f1/<kind>`` per kind; ``f1_any`` ignores the kind.
Tolerance is in pixels of the target (label) resolution; predictions at another size are resized
to it with nearest-neighbour first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hydranet.data import LANE_KINDS
from hydranet.metrics.frame_records import FrameMetric, safe_div
from hydranet.metrics.segmentation import resize_nearest, to_tensor


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """Binary dilation of ``[B, H, W]`` by a square of side ``2 * radius + 1``."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float().unsqueeze(1), 2 * radius + 1, stride=1, padding=radius).squeeze(1) > 0


def f1(p_tp: np.ndarray, p_all: np.ndarray, g_tp: np.ndarray, g_all: np.ndarray) -> tuple[Any, Any, Any]:
    """Precision, recall (NaN when undefined) and F1 (0 when either side has pixels but nothing
    matches, NaN only when there are neither predicted nor ground-truth pixels)."""
    precision, recall = safe_div(p_tp, p_all), safe_div(g_tp, g_all)
    p0, r0 = np.nan_to_num(precision), np.nan_to_num(recall)
    score = np.where(p0 + r0 > 0, safe_div(2 * p0 * r0, p0 + r0), 0.0)
    return precision, recall, np.where(np.asarray(p_all) + np.asarray(g_all) > 0, score, np.nan)


class LaneF1(FrameMetric):
    """Predictions: kind ids ``[N, h, w]`` (int) or scores ``[N, K, h, w]`` (argmax); targets: the
    ``lanes`` label ``[N, H, W]`` (0 = none)."""

    def __init__(self, tolerance_px: int = 2, kinds: Sequence[str] = LANE_KINDS) -> None:
        self.tolerance_px = int(tolerance_px)
        self.kinds = tuple(kinds)  # kinds[0] is "no marking"
        super().__init__()

    def frame_record(self, pred: Any, target: Any, where: str) -> np.ndarray:
        """Counts ``[K, 4]`` int64 (predicted TP, predicted, ground-truth TP, ground-truth pixels) for each line
        kind, last row any kind, with ``tolerance_px`` dilation. Raises ``ValueError`` on score maps without
        one channel per kind or on shapes that differ."""
        pred, target = to_tensor(pred, f"{where} prediction"), to_tensor(target, f"{where} target")
        pred = pred.to(target.device)
        if pred.is_floating_point():
            if pred.ndim != target.ndim + 1 or pred.shape[-3] != len(self.kinds):
                raise ValueError(f"{where}: lane scores must be [..., K={len(self.kinds)}, h, w], got "
                                 f"{tuple(pred.shape)} for target {tuple(target.shape)}")
            pred = pred.argmax(-3)
        hw = tuple(target.shape[-2:])
        pred = resize_nearest(pred, hw)
        if pred.shape != target.shape:
            raise ValueError(f"{where}: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
        pred, target = pred.reshape(-1, *hw).long(), target.reshape(-1, *hw).long()
        rows = []
        for k in list(range(1, len(self.kinds))) + [-1]:  # -1: any marking
            p = pred > 0 if k < 0 else pred == k
            t = target > 0 if k < 0 else target == k
            rows.append([(p & _dilate(t, self.tolerance_px)).sum(), p.sum(),
                         (t & _dilate(p, self.tolerance_px)).sum(), t.sum()])
        return torch.tensor(rows).numpy().astype(np.int64)  # [kinds-1 + 1, 4]: p_tp, p_all, g_tp, g_all

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """``f1`` (micro over line kinds), ``precision``, ``recall``, ``f1_any`` and ``f1/<kind>``."""
        recs = self.records(frames)
        c = np.sum(recs, axis=0) if recs else np.zeros((len(self.kinds), 4), np.int64)
        per_kind, any_kind = c[:-1], c[-1]
        micro = per_kind.sum(0)
        p, r, f = f1(*micro)
        out = {"f1": float(f), "precision": float(p), "recall": float(r)}
        out["f1_any"] = float(f1(*any_kind)[2])
        _, _, fk = f1(*per_kind.T)
        out.update({f"f1/{name}": float(v) for name, v in zip(self.kinds[1:], fk, strict=True)})
        return out
