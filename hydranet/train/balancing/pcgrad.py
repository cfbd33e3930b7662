"""``pcgrad`` (Yu et al., NeurIPS 2020): conflicting per-task gradients projected onto each other's normal plane."""

from __future__ import annotations

import torch
from torch import Tensor

from hydranet.train.balancing.base import BALANCERS, BalancingConfig
from hydranet.train.balancing.per_task import PerTaskGrads
from hydranet.train.distributed import all_reduce_grads
from hydranet.train.scheduler import stable_seed


@BALANCERS.register(options=BalancingConfig)
class PCGradBalancer(PerTaskGrads):
    """Gradient surgery (PCGrad; Yu et al., NeurIPS 2020) on the shared parameters (``cfg.shared`` paths).

    Raises ``ValueError`` when those paths hold no trainable parameter. Per-task gradients are all-reduced
    *before* projection, so every rank writes the update one process would (module docstring).
    """

    name = "pcgrad"

    @staticmethod
    def shared_paths(options: BalancingConfig) -> list[str]:
        """The shared sub-graph PCGrad projects: ``train.balancing.shared``."""
        return list(options.shared)

    def backward(self, losses: dict[str, Tensor], scale: float) -> float:
        """Accumulate per-task gradients of ``scale · w_t L_t`` on the shared parameters (flat buffers ``[T, n]``)
        and the plain sum into the head parameters' ``.grad``; returns ``Σ w_t L_t`` as a float."""
        weighted = {t: self.weight(t).to(loss.dtype) * loss for t, loss in losses.items()}
        self._accumulate(weighted, scale, with_others=True)
        return float(sum(v.detach() for v in weighted.values()))

    def reduce(self, step: int, active: list[str]) -> None:
        """All-reduce the per-task buffers and head gradients, combine the ``active`` tasks' shared gradients
        with ``pcgrad_combine`` (task order seeded by ``(seed, step)``, identical on every rank), write ``.grad``
        and clear the buffers."""
        all_reduce_grads(self.others)
        grads = self._reduced_buffers()
        rows = [self.tasks.index(t) for t in sorted(active)]
        gen = torch.Generator().manual_seed(stable_seed(self.seed, "pcgrad", step))
        self._write_shared(pcgrad_combine(grads[rows], gen) if rows else torch.zeros_like(grads[0]))
        self.discard()


def pcgrad_combine(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad on per-task gradients ``[T, n]``: project each onto the normal plane of every task
    it conflicts with (random order, against the *original* gradients), then sum."""
    out = grads.clone()
    sq = (grads * grads).sum(1)
    t = grads.shape[0]
    for i in range(t):
        order = torch.randperm(t, generator=generator).tolist()
        for j in order:
            if j == i or sq[j] == 0:
                continue
            dot = torch.dot(out[i], grads[j])
            if dot < 0:
                out[i] -= dot / sq[j] * grads[j]
    return out.sum(0)


