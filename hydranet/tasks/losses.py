"""Losses the tasks share, and the presence selection every loss starts from.

Losses select the *present* samples first (``present_index``) and compute on that subset only, so a sample
without the label contributes exactly nothing -- not even to a normaliser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hydranet.data import Batch


def present_index(batch: Batch, label: str, device: torch.device) -> Tensor:
    """Indices (int64) of the samples that carry ``label``; empty when the label is absent everywhere."""
    present = batch.present.get(label)
    if present is None or batch.labels.get(label) is None:
        return torch.zeros(0, dtype=torch.long, device=device)
    return present.to(device).nonzero().flatten()


def of_present(x: Tensor, present: Tensor) -> Tensor:
    """Rows ``present`` (``present_index``: sorted, unique) of ``x [B, ...]``; ``x`` itself when every sample is
    present, the usual case: no copy, and no scatter of the gradient back into a zero tensor of ``x``'s size."""
    return x if present.numel() == x.shape[0] else x[present]


def binary_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise RetinaNet focal loss (no reduction)."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return a_t * (1 - p_t) ** gamma * ce


def soft_dice_loss(prob: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - dice`` per ``[S, C]`` map (prob/target ``[S, C, H, W]``), averaged. ``smooth`` keeps maps with no
    positives from dominating: an empty target and a near-zero prediction score ~0 loss."""
    inter = (prob * target).flatten(2).sum(-1)
    denom = prob.flatten(2).sum(-1) + target.flatten(2).sum(-1)
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def class_dice_loss(prob: Tensor, target: Tensor, first: int = 0, smooth: float = 1.0) -> Tensor:
    """``soft_dice_loss`` of class probabilities ``prob [S, C, H, W]`` against class ids ``target [S, H, W]`` (int64)
    for classes ``first..C-1``, without building the one-hot target: the overlap of class c is the sum of
    ``prob[c]`` over the pixels labelled c (one gather and one scatter-add) and its size a bincount."""
    s, c = prob.shape[:2]
    p_true = prob.gather(1, target[:, None])[:, 0]  # [S, H, W]: the probability of each pixel's own class
    bins = (torch.arange(s, device=target.device)[:, None, None] * c + target).flatten()
    inter = torch.zeros(s * c, dtype=prob.dtype, device=prob.device).index_add_(0, bins, p_true.flatten())
    count = torch.bincount(bins, minlength=s * c).to(prob.dtype)
    inter, count = inter.view(s, c)[:, first:], count.view(s, c)[:, first:]
    denom = prob[:, first:].flatten(2).sum(-1) + count
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - GIoU`` for boxes ``[..., 4]`` (x1, y1, x2, y2), element-wise."""
    ix1, iy1 = torch.maximum(pred[..., 0], target[..., 0]), torch.maximum(pred[..., 1], target[..., 1])
    ix2, iy2 = torch.minimum(pred[..., 2], target[..., 2]), torch.minimum(pred[..., 3], target[..., 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    area_p = (pred[..., 2] - pred[..., 0]).clamp(min=0) * (pred[..., 3] - pred[..., 1]).clamp(min=0)
    area_t = (target[..., 2] - target[..., 0]).clamp(min=0) * (target[..., 3] - target[..., 1]).clamp(min=0)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-6)
    ex1, ey1 = torch.minimum(pred[..., 0], target[..., 0]), torch.minimum(pred[..., 1], target[..., 1])
    ex2, ey2 = torch.maximum(pred[..., 2], target[..., 2]), torch.maximum(pred[..., 3], target[..., 3])
    enclose = ((ex2 - ex1) * (ey2 - ey1)).clamp(min=1e-6)
    return 1 - (iou - (enclose - union) / enclose)
