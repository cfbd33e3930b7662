"""Monocular depth: AbsRel, RMSE and δ<1.25 over valid pixels, overall and by distance bin.

Valid pixels are those with a return (target > 0, finite). Bins use the *target* depth,
``[lo, hi)``. Predictions are clamped to >= 1e-3 m for the ratios; a prediction at another size is
resized to the target's with nearest-neighbour. All three are means over pixels (sums of
|d-d*|/d*, (d-d*)^2 and [max(d/d*, d*/d) < 1.25] over all frames), so streaming is exact.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch

from hydranet.metrics.base import NO_GROUND_TRUTH
from hydranet.metrics.frame_records import FrameMetric, safe_div
from hydranet.metrics.segmentation import resize_nearest, to_tensor


def _bin_name(lo: float, hi: float) -> str:
    """Key suffix of the depth bin ``[lo, hi)`` in metres: ``"10-20m"``, or ``"80m+"`` when ``hi`` is infinite."""
    return f"{lo:g}-{hi:g}m" if np.isfinite(hi) else f"{lo:g}m+"


class DepthMetric(FrameMetric):
    """``abs_rel`` (headline, lower is better), ``rmse``, ``delta1`` and ``<metric>/<bin>``.

    Predictions and targets: float depth ``[N, H, W]`` in metres (z along the camera axis).
    """

    def __init__(self, bins: Sequence[float] = (0, 10, 20, 40, 80, float("inf"))) -> None:
        self.bins = tuple(float(b) for b in bins)
        if len(self.bins) < 2 or np.any(np.diff(self.bins) <= 0):
            raise ValueError(f"DepthMetric: bins must be increasing, got {self.bins}")
        super().__init__()

    def frame_record(self, pred: Any, target: Any, where: str) -> np.ndarray:
        """Per-bin sums ``[4, bins]`` float64 over one frame's valid pixels: count, Σ AbsRel, Σ squared error
        (m²), count of δ<1.25. Raises ``ValueError`` on a non-tensor input or camera dims that differ."""
        pred, target = to_tensor(pred, f"{where} prediction"), to_tensor(target, f"{where} target")
        pred = pred.to(target.device)
        if pred.ndim == target.ndim + 1 and pred.shape[-3] == 1:
            pred = pred.squeeze(-3)  # [N, 1, h, w]
        if pred.shape[:-2] != target.shape[:-2]:
            raise ValueError(f"{where}: depth prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
        pred = resize_nearest(pred.double(), tuple(target.shape[-2:])).reshape(-1)
        t = target.double().reshape(-1)
        valid = (t > 0) & torch.isfinite(t) & torch.isfinite(pred)
        p, t = pred[valid].clamp_min(1e-3), t[valid]
        edges = torch.tensor(self.bins, dtype=t.dtype, device=t.device)
        idx = torch.bucketize(t, edges, right=True) - 1  # bin i holds [bins[i], bins[i+1])
        inside = (idx >= 0) & (idx < len(self.bins) - 1)
        idx, p, t = idx[inside], p[inside], t[inside]
        n_b = len(self.bins) - 1
        rec = torch.zeros(4, n_b, dtype=torch.float64, device=t.device)
        rec[0].index_add_(0, idx, torch.ones_like(t))
        rec[1].index_add_(0, idx, (p - t).abs() / t)
        rec[2].index_add_(0, idx, (p - t) ** 2)
        rec[3].index_add_(0, idx, (torch.maximum(p / t, t / p) < 1.25).double())
        return rec.cpu().numpy()  # [4, bins]: count, sum abs_rel, sum sq err, count delta<1.25

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """``abs_rel``, ``rmse`` (m), ``delta1`` and per bin ``<metric>/<bin>`` and ``pixels/<bin>`` over
        ``frames``; NaN where there are no pixels."""
        recs = self.records(frames)
        s = np.sum(recs, axis=0) if recs else np.zeros((4, len(self.bins) - 1))
        tot = s.sum(1)
        out = {"abs_rel": float(safe_div(tot[1], tot[0])), "rmse": float(np.sqrt(safe_div(tot[2], tot[0]))),
               "delta1": float(safe_div(tot[3], tot[0]))}
        for i in range(len(self.bins) - 1):
            name = _bin_name(self.bins[i], self.bins[i + 1])
            out[f"abs_rel/{name}"] = float(safe_div(s[1, i], s[0, i]))
            out[f"rmse/{name}"] = float(np.sqrt(safe_div(s[2, i], s[0, i])))
            out[f"delta1/{name}"] = float(safe_div(s[3, i], s[0, i]))
            out[f"pixels/{name}"] = float(s[0, i])
        return out

    def undefined_reason(self, key: str) -> str:
        """Always ``NO_GROUND_TRUTH``: a depth result is NaN only without valid ground-truth pixels (in its bin)."""
        return NO_GROUND_TRUTH
