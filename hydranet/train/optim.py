"""AdamW with decoupled weight decay on weights only, and a linear-warmup + cosine learning rate.

The learning rate is a pure function of the step (``lr_at``), so it needs no state of its own in a
checkpoint and a resumed run continues the exact schedule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hydranet.train.config import TrainConfig


def build_optimizer(named_params: list[tuple[str, nn.Parameter]], cfg: TrainConfig,
                    extra_no_decay: list[nn.Parameter] | None = None) -> torch.optim.AdamW:
    """Weight decay applies to matrices/kernels (ndim ≥ 2); biases, norm scales and balancing
    parameters are not decayed (decaying a BatchNorm scale or a log-variance has no meaning)."""
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    no_decay += list(extra_no_decay or [])
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per parameter group instead of ~12 small ops per tensor (the same per-element
    # arithmetic on every device count, so DDP runs stay bit-comparable with single-process ones).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup from ~0 to ``lr`` over ``warmup_steps``, then cosine to ``lr·min_lr_ratio``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` (the trainer calls it with ``lr_at(step)``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
