"""``uncertainty`` (Kendall, Gal & Cipolla, CVPR 2018): ``Σ exp(-s_t) L_t + s_t`` with learned log-variances."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hydranet.train.balancing.base import BALANCERS, Balancer, BalancingConfig
from hydranet.train.distributed import all_reduce_grads


@BALANCERS.register(options=BalancingConfig)
class UncertaintyBalancer(Balancer):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): ``Σ exp(-s_t) L_t + s_t``.

    The learned log-variances ``s_t = log σ_t²`` (``log_vars`` ``[T]``, initialised so ``exp(-s_t)`` is the
    configured weight) are trained by the trainer's optimizer; their gradients are all-reduced with the rest.
    """

    name = "uncertainty"

    def __init__(self, options: BalancingConfig, tasks: list[str], model: nn.Module, trainable: list[nn.Parameter],
                 seed: int = 0) -> None:
        super().__init__(options, tasks, model, trainable, seed)
        # s_t = log σ_t², initialised so exp(-s_t) equals the configured static weight.
        self.log_vars = nn.Parameter(-torch.log(self.task_weights.clone().clamp_min(1e-6)))

    def weights(self) -> dict[str, float]:
        """``{task: exp(-s_t)}``, the current effective weights."""
        return {t: float(w) for t, w in zip(self.tasks, torch.exp(-self.log_vars.detach()).tolist(), strict=True)}

    def backward(self, losses: dict[str, Tensor], scale: float) -> float:
        """Accumulate the gradients of ``scale · Σ (exp(-s_t) L_t + s_t)``; returns that total (unscaled)."""
        total = 0.0
        for t, loss in losses.items():
            s = self.log_vars[self.tasks.index(t)]
            total = total + torch.exp(-s).to(loss.dtype) * loss + s
        (total * scale).backward()
        return float(total.detach())

    def reduce(self, step: int, active: list[str]) -> None:
        """Average the gradients of ``log_vars`` over ranks, and of the trainable parameters unless DDP did."""
        all_reduce_grads([*([] if self.model_reduced_by_ddp else self.trainable), self.log_vars])


