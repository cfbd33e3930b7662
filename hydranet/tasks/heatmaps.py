"""CenterNet heatmaps (Zhou et al. 2019, "Objects as Points"): the Gaussian peaks a target splats, the
penalty-reduced focal loss, the peaks a decoder reads back, and which decoded boxes a picture shows."""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hydranet.tasks.base import Task


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7) -> Tensor:
    """CenterNet's radius: the largest centre shift keeping IoU >= ``min_overlap`` with the box
    (three cases of the quadratic, smallest root wins). Sizes in heatmap cells, vectorised."""
    h, w = height.float(), width.float()
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def gaussian_kernel(radius: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``[2r+1, 2r+1]`` Gaussian peak ``draw_gaussian`` splats (σ = (2r+1)/6, 1 at the centre), built once per
    radius and dtype: a training step encodes hundreds of objects, and building each one's kernel from scalar
    tensor ops cost more than the step's convolutions in the demo. The tensor is shared (cached): read it, never
    write to it."""
    return _gaussian_kernel(max(int(radius), 0), dtype)


@functools.lru_cache(maxsize=256)
def _gaussian_kernel(radius: int, dtype: torch.dtype) -> Tensor:
    sigma = (2 * radius + 1) / 6
    r = torch.arange(-radius, radius + 1, dtype=dtype)
    return torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))


def draw_gaussian(heatmap: Tensor, cx: int, cy: int, radius: int) -> None:
    """Splat a Gaussian peak of 1 at cell ``(cy, cx)`` into ``heatmap [h, w]`` (element-wise max); the part of
    the ``gaussian_kernel(radius)`` that falls inside the map."""
    radius = max(int(radius), 0)
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    kernel = gaussian_kernel(radius, heatmap.dtype).to(heatmap.device)
    g = kernel[radius - top:radius + bottom, radius - left:radius + right]
    region = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    torch.maximum(region, g, out=region)


def heatmap_focal_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None,
                       alpha: float = 2.0, beta: float = 4.0) -> tuple[Tensor, Tensor]:
    """CenterNet's penalty-reduced focal loss. Returns ``(sum, num_peaks)``; the caller divides by the
    number of peaks over the present samples. ``weight`` (broadcastable, 0/1) masks ignored cells.

    Log-probabilities come from ``logsigmoid`` so saturated logits stay finite."""
    p = torch.sigmoid(logits)
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos = target.ge(1.0 - 1e-4).float()
    pos_loss = -((1 - p) ** alpha) * log_p * pos
    neg_loss = -((1 - target) ** beta) * (p**alpha) * log_1mp * (1 - pos)
    loss = pos_loss + neg_loss
    if weight is not None:
        loss = loss * weight
        pos = pos * weight
    return loss.sum(), pos.sum()


def topk_peaks(heat: Tensor, k: int, kernel: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Max-pool NMS then top-k over classes and cells of ``heat [S, C, h, w]`` (probabilities).

    Returns ``scores, classes, ys, xs``, each ``[S, k']`` with ``k' = min(k, C*h*w)``."""
    s, c, h, w = heat.shape
    keep = F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2) == heat
    heat = heat * keep
    k = min(k, c * h * w)
    scores, idx = heat.flatten(1).topk(k, dim=1)
    classes = idx // (h * w)
    cell = idx % (h * w)
    return scores, classes, cell // w, cell % w


def above_threshold(decoded: dict[str, Tensor], threshold: float) -> dict[str, Tensor]:
    """The detections of one decoded sample (``dict`` of per-object tensors with ``scores``) scoring
    ``>= threshold``. Decoders keep a low-score tail for AP; pictures show only confident boxes."""
    keep = decoded["scores"] >= threshold
    return {k: v[keep] if isinstance(v, Tensor) and v.ndim >= 1 and len(v) == len(keep) else v
            for k, v in decoded.items()}


def boxes_to_draw(task: Task, views: Any, decoded: dict[str, Tensor] | None, ground_truth: bool,
                  labelled: str = "labelled objects") -> dict[str, Tensor] | None:
    """What a box task's ``draw`` shows of one sample: every labelled box, or the predictions scoring at least the
    task's ``draw_threshold``; None when there is nothing to draw, leaving a note in ``views`` that says how many
    predictions lie below the threshold (they are in ``predictions.json``, not in the picture)."""
    if decoded is None:
        return None
    shown = decoded if ground_truth else above_threshold(decoded, task.cfg.draw_threshold)
    if len(shown["boxes"]):
        return shown
    if ground_truth:
        views.note(f"{task.name}: 0 {labelled}")
    else:
        below = len(decoded["boxes"])
        views.note(f"{task.name}: 0 detections with score >= {task.cfg.draw_threshold:g}"
                   + (f" ({below} below it)" if below else ""))
    return None
