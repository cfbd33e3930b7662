"""The optimizer (AdamW, or Muon for the hidden layers' weights and AdamW for the rest) and a linear-warmup +
cosine learning rate.

The learning rate is a pure function of the step (``lr_at``), so it needs no state of its own in a
checkpoint and a resumed run continues the exact schedule.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from hydranet.tasks import ConvHead
from hydranet.train.config import TrainConfig

__all__ = ["MuonAdamW", "build_optimizer", "lr_at", "muon_exempt", "set_lr"]

# The quintic Newton–Schulz iteration of Muon (Jordan et al. 2024; torch.optim.Muon's coefficients and step count).
_NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
_NS_STEPS = 5
# Matrices are padded to multiples of these (rows, columns) and orthogonalised together, one batched product per
# bucket: the demo model's 68 small kernels take 11 batches instead of 68 × 15 small products, whose per-call
# overhead, not their arithmetic, was Muon's cost on a CPU.
_BUCKET = (32, 128)


def muon_exempt(model: nn.Module) -> set[int]:
    """``id``s of the weights Muon must not update: the first convolution of the trunk, which reads the pixels,
    and every ``ConvHead``'s output convolutions, which write the task outputs. Muon orthogonalises a hidden
    layer's update; for a model's input and output layers its authors prescribe AdamW (Jordan et al., "Muon: An
    optimizer for hidden layers in neural networks", 2024). Heads of another kind keep every weight hidden."""
    exempt: set[int] = set()
    trunk = getattr(model, "trunk", None)
    first = next((m for m in trunk.modules() if isinstance(m, nn.Conv2d)), None) if trunk is not None else None
    if first is not None:
        exempt.add(id(first.weight))
    for module in model.modules():
        if isinstance(module, ConvHead):
            exempt.update(id(conv.weight) for conv in module.output_convs())
    return exempt


def build_optimizer(named_params: list[tuple[str, nn.Parameter]], cfg: TrainConfig,
                    extra_no_decay: list[nn.Parameter] | None = None,
                    exempt: Iterable[int] = ()) -> torch.optim.AdamW:
    """``train.optimizer``'s optimizer over ``named_params`` (those with ``requires_grad``) and ``extra_no_decay``
    (balancer parameters). Weight decay applies to matrices/kernels (ndim ≥ 2); biases, norm scales and balancing
    parameters are not decayed (decaying a BatchNorm scale or a log-variance has no meaning). ``muon``: the linear
    and 2D conv weights except those whose ``id`` is in ``exempt`` (``muon_exempt``) take Muon's update
    (``MuonAdamW``) at ``train.muon_lr`` (its group's ``lr_scale`` = ``muon_lr / lr``, which ``set_lr`` applies);
    other kernels keep AdamW's."""
    use_muon = cfg.optimizer == "muon"
    exempt = set(exempt)
    decay, no_decay, hidden = [], [], []
    for _, p in named_params:
        if not p.requires_grad:
            continue
        if p.ndim < 2:
            no_decay.append(p)
        elif use_muon and p.ndim in (2, 4) and id(p) not in exempt:  # linear and 2D conv weights
            hidden.append(p)
        else:
            decay.append(p)
    no_decay += list(extra_no_decay or [])
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": cfg.weight_decay},
                                    {"params": no_decay, "weight_decay": 0.0}]
    if not use_muon:
        # fused: one kernel per parameter group instead of ~12 small ops per tensor (the same per-element
        # arithmetic on every device count, so DDP runs stay bit-comparable with single-process ones).
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)
    muon_scale = (cfg.muon_lr / cfg.lr) if cfg.muon_lr is not None else 1.0
    groups.append({"params": hidden, "weight_decay": cfg.weight_decay, "muon": True, "lr_scale": muon_scale,
                   "lr": cfg.lr * muon_scale})
    return MuonAdamW(groups, lr=cfg.lr, betas=cfg.betas)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _orthogonalize(updates: list[Tensor], steps: int = _NS_STEPS) -> list[Tensor]:
    """Muon's orthogonalisation of each ``[m, n]`` matrix of ``updates``: ``steps`` quintic Newton–Schulz iterations
    in bf16 after scaling to unit Frobenius norm, which take the singular values to about 1 (0.7–1.2), as
    ``torch.optim.Muon`` computes it (Jordan et al. 2024). Returns bf16 matrices of the same shapes. The matrices
    are zero-padded into buckets of similar shape and iterated as one batch per bucket: the padding stays zero
    through every iteration and adds only zeros to the sums, so each matrix's result is its own."""
    a, b, c = _NS_COEFFICIENTS
    wide = [u.mT if u.shape[0] > u.shape[1] else u for u in updates]  # rows <= columns: the smaller Gram matrix
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, u in enumerate(wide):
        buckets[(_round_up(u.shape[0], _BUCKET[0]), _round_up(u.shape[1], _BUCKET[1]))].append(i)
    out: list[Tensor] = [updates[0]] * len(updates)
    for (rows, cols), members in buckets.items():
        X = torch.zeros(len(members), rows, cols, dtype=torch.bfloat16, device=updates[0].device)
        for k, i in enumerate(members):
            X[k, :wide[i].shape[0], :wide[i].shape[1]] = wide[i]
        X /= X.flatten(1).norm(dim=1).clamp(min=1e-7)[:, None, None]
        for _ in range(steps):
            gram = X @ X.mT
            X = torch.baddbmm(X, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), X, beta=a)
        for k, i in enumerate(members):
            block = X[k, :wide[i].shape[0], :wide[i].shape[1]]
            out[i] = block.mT if updates[i].shape[0] > updates[i].shape[1] else block
    return out


def _matrix(t: Tensor) -> Tensor:
    """A kernel ``[O, I, kh, kw]`` (or a matrix) as the ``[O, I·kh·kw]`` matrix Muon orthogonalises: a view of
    its storage whatever its layout (channels-last kernels are ``[O, kh, kw, I]`` in memory; the order of the
    columns does not change the orthogonalised update, which permutes with them)."""
    if t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).view(t.shape[0], -1)
    return t.view(t.shape[0], -1)


class MuonAdamW(torch.optim.AdamW):
    """AdamW (fused) for the parameter groups without ``"muon": True``; Muon for those with it: SGD momentum
    (Nesterov) whose update is orthogonalised by five Newton–Schulz iterations (``_orthogonalize``), the weight seen
    as the matrix ``[out, in·kh·kw]`` (Jordan et al. 2024; ``torch.optim.Muon``'s update, which the tests check it
    against, with the matrices of a step orthogonalised in batches). Its step is scaled to AdamW's
    update RMS (``0.2·sqrt(max(out, in·kh·kw))``, Liu et al., "Muon is Scalable for LLM Training", 2025), so the
    same ``lr``, schedule and decoupled weight decay serve both. Muon's momentum buffer has its parameter's shape
    and layout, so checkpoints store it like AdamW's moments."""

    def __init__(self, params: Any, lr: float, betas: tuple[float, float], momentum: float = 0.95,
                 ns_steps: int = _NS_STEPS) -> None:
        super().__init__(params, lr=lr, betas=betas, fused=True)
        for group in self.param_groups:
            if group.get("muon"):
                group.setdefault("momentum", momentum)
                group.setdefault("ns_steps", ns_steps)

    def _init_group(self, group: dict[str, Any], *lists: Any) -> bool:  # type: ignore[override]
        # AdamW's step gathers each group's parameters here: Muon's groups are left out of it.
        return False if group.get("muon") else super()._init_group(group, *lists)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One update of every group: AdamW's fused step for the AdamW groups (``closure``, if given, is
        evaluated there), then Muon's for the groups marked ``"muon"``, in place. Returns the closure's loss
        (None without one)."""
        loss = super().step(closure)
        for group in self.param_groups:
            if not group.get("muon"):
                continue
            params, updates = [], []
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    # step: Muon's steps taken; AdamW's loading code expects every parameter's state to count them
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                # The gradient in its parameter's layout, so the two matrices' columns are the same kernel taps.
                grad = _matrix(p.grad if p.grad.stride() == p.stride() else torch.empty_like(p).copy_(p.grad))
                buf = _matrix(state["momentum_buffer"])
                buf.lerp_(grad, 1 - momentum)
                updates.append(grad.lerp(buf, momentum))  # Nesterov
                params.append(_matrix(p))
            if not params:
                continue
            lr, decay = group["lr"], group["weight_decay"]
            for weight, update in zip(params, _orthogonalize(updates, group["ns_steps"]), strict=True):
                weight.mul_(1 - lr * decay)
                # Moonshot's RMS match: the orthogonalised update scaled to AdamW's typical update size.
                weight.add_(update, alpha=-lr * 0.2 * math.sqrt(max(weight.shape)))
        return loss


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup from ~0 to ``lr`` over ``warmup_steps``, then cosine to ``lr·min_lr_ratio``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` times its ``lr_scale`` (1 unless set: Muon's groups
    carry ``train.muon_lr / train.lr``); the trainer calls it with ``lr_at(step)``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
