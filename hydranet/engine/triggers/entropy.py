"""Per-task uncertainty: mean binary entropy of a dense head (drivable, BEV semantic) or of a
CenterNet heatmap (2D detection, traffic lights, 3D objects).

Entropy H(p) = -p log2 p - (1-p) log2 (1-p) ∈ [0, 1] bits per pixel/cell and class. For dense
heads the score is the mean over pixels of the frame's *uncertain* share: the fraction of pixels
with H > ``threshold`` — a plain mean is dominated by the (easy) sky and road interior. For
heatmaps the score is the fraction of peaks above ``min_peak`` that sit in the ambiguous band
``[low, high]`` of sigmoid probability (objects the model half-sees), following the "least
confidence" family of active-learning scores (Settles 2009, §3.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hydranet.engine.triggers.base import FrameContext, Score, Trigger, TriggerError, TriggerOptions, register_trigger

_DENSE = ("drivable", "bev_semantic")
_HEATMAP = ("detection2d", "traffic_light", "objects3d")


def _binary_entropy(p: Tensor) -> Tensor:
    """Elementwise entropy in bits of Bernoulli(p); 0 at p ∈ {0, 1}, 1 at p = 0.5."""
    p = p.float().clamp(1e-6, 1 - 1e-6)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


class EntropyOptions(TriggerOptions):
    """``entropy``'s options: the task scored, the entropy ``threshold`` in bits (dense), the ambiguous
    probability band [``low``, ``high``] and the smallest peak counted (heatmaps)."""

    task: str = "drivable"
    threshold: float = 0.5
    low: float = 0.2
    high: float = 0.6
    min_peak: float = 0.1


@register_trigger
class Entropy(Trigger):
    """``entropy:task=drivable`` (default) — any of ``drivable``, ``bev_semantic``, ``detection2d``,
    ``traffic_light``, ``objects3d``."""

    name = "entropy"

    Options = EntropyOptions

    def __init__(self, options: EntropyOptions) -> None:
        task = options.task
        if task not in _DENSE + _HEATMAP:
            raise TriggerError(f"trigger 'entropy': task '{task}' has no entropy score; "
                               f"choose from {_DENSE + _HEATMAP}")
        super().__init__(options)
        self.task, self.threshold, self.low, self.high = task, options.threshold, options.low, options.high
        self.min_peak = options.min_peak
        self.tasks = (task,)  # type: ignore[misc]

    def score(self, frame: FrameContext) -> Score:
        """Dense tasks: 4 × the fraction of pixels with binary entropy above ``threshold`` bits (capped at 1).
        Heatmap tasks: the fraction of peaks (>= ``min_peak``) whose score lies in [``low``, ``high``]."""
        ctx = frame.ctx
        if self.task in _DENSE:
            p = ctx.probabilities(self.task)[frame.i]
            frac = float((_binary_entropy(p) > self.threshold).float().mean())
            return Score(min(1.0, 4 * frac), f"{self.task}: {100 * frac:.1f} % of pixels uncertain")
        heat = torch.sigmoid(ctx.outputs[self.task]["heatmap"][frame.i].float())  # [N, C, h, w] or [C, R, C']
        flat = heat.reshape(-1, 1, *heat.shape[-2:])
        is_peak = flat == F.max_pool2d(flat, 3, 1, 1)
        peaks = flat[is_peak & (flat >= self.min_peak)]
        if peaks.numel() == 0:
            return Score(0.0, f"{self.task}: no peaks")
        ambiguous = int(((peaks >= self.low) & (peaks <= self.high)).sum())
        frac = ambiguous / peaks.numel()
        return Score(frac, f"{self.task}: {ambiguous} of {peaks.numel()} detections half-seen "
                           f"(score {self.low:g}–{self.high:g})")
