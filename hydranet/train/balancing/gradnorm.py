"""``gradnorm`` (Chen et al., ICML 2018): task weights that balance the gradient norms on the last shared layer."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hydranet.train.balancing.base import BALANCERS, BalancingConfig
from hydranet.train.balancing.per_task import PerTaskGrads
from hydranet.train.distributed import all_reduce_grads, all_reduce_mean_


@BALANCERS.register(options=BalancingConfig)
class GradNormBalancer(PerTaskGrads):
    """GradNorm (Chen et al., ICML 2018): task weights ``w_t`` (summing to T) learned so the gradient norms on
    the last shared layer (``cfg.gradnorm.shared``) follow each task's relative inverse training rate.

    Raises ``ValueError`` when that layer holds no trainable parameter. The weights are updated once per
    optimizer step by ``gradnorm_update`` from all-reduced norms and losses (identical on every rank).
    """

    name = "gradnorm"

    @staticmethod
    def shared_paths(options: BalancingConfig) -> list[str]:
        """The last shared layer GradNorm measures: ``train.balancing.gradnorm.shared``."""
        return [options.gradnorm.shared]

    def __init__(self, options: BalancingConfig, tasks: list[str], model: nn.Module, trainable: list[nn.Parameter],
                 seed: int = 0) -> None:
        super().__init__(options, tasks, model, trainable, seed)
        n = len(self.tasks)
        # GradNorm keeps Σ w = T; start from the configured weights rescaled to that sum.
        self.task_weights.mul_(n / self.task_weights.sum())
        self.register_buffer("initial_losses", torch.full((n,), math.nan))
        self.loss_sum = torch.zeros(n)
        self.loss_count = torch.zeros(n)

    def backward(self, losses: dict[str, Tensor], scale: float) -> float:
        """Accumulate the unweighted per-task gradients on the shared layer (for the norms) and the losses (for
        the training rates), then backpropagate ``scale · Σ w_t L_t``; returns ``Σ w_t L_t`` as a float."""
        # ∇_W L_t (unweighted) per task for the norms, then the weighted total through everything.
        self._accumulate(losses, scale, with_others=False)
        for t, loss in losses.items():
            i = self.tasks.index(t)
            self.loss_sum[i] += float(loss.detach())
            self.loss_count[i] += 1
        return super().backward(losses, scale)

    def reduce(self, step: int, active: list[str]) -> None:
        """All-reduce gradients, per-task norms and mean losses, then take one GradNorm step on the weights of
        the ``active`` tasks that had a loss this step (the first loss seen sets ``L_t(0)``)."""
        all_reduce_grads(self.trainable)
        grads = self._reduced_buffers()
        stats = torch.stack([self.loss_sum, self.loss_count]).to(grads.device)
        all_reduce_mean_([stats])
        rows = [self.tasks.index(t) for t in sorted(active) if stats[1, self.tasks.index(t)] > 0]
        if rows:
            losses = (stats[0] / stats[1].clamp_min(1)).cpu()
            norms = grads.norm(dim=1).cpu()
            initial = self.initial_losses.cpu()
            new = gradnorm_update(self.task_weights.cpu(), initial, losses, norms, rows,
                                  self.cfg.gradnorm.alpha, self.cfg.gradnorm.lr)
            self.initial_losses.copy_(initial)
            self.task_weights.copy_(new)
        self.discard()

    def discard(self) -> None:
        """Forget this step's per-task gradients and accumulated losses (non-finite step)."""
        super().discard()
        self.loss_sum.zero_()
        self.loss_count.zero_()


def gradnorm_update(weights: Tensor, initial: Tensor, losses: Tensor, norms: Tensor, rows: list[int],
                    alpha: float, lr: float) -> Tensor:
    """One GradNorm step on the task weights (in place on ``initial`` for first-seen tasks).

    ``norms[t] = ‖∇_W L_t‖`` (unweighted, global), so ``G_t = w_t·norms[t]`` and the derivative of
    ``Σ|G_t − target_t|`` w.r.t. ``w_t`` (target held constant, as in the paper) is
    ``sign(G_t − target_t)·norms[t]``: exact, no second-order autograd needed.
    """
    w = weights.clone()
    idx = torch.tensor(rows)
    first = torch.isnan(initial[idx])
    initial[idx[first]] = losses[idx[first]].clamp_min(1e-12)
    ratio = losses[idx] / initial[idx]
    rate = ratio / ratio.mean()
    g = w[idx] * norms[idx]
    target = g.mean() * rate.pow(alpha)
    grad_w = torch.sign(g - target) * norms[idx]
    new = (w[idx] - lr * grad_w).clamp_min(1e-3)
    w[idx] = new * (w[idx].sum() / new.sum())  # renormalise: the active tasks keep their total weight
    return w


