"""What PCGrad and GradNorm share: per-task gradients of the shared parameters, accumulated in flat buffers
and all-reduced before they are combined (why: ``base.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hydranet.train.balancing.base import Balancer, BalancingConfig, module_params
from hydranet.train.distributed import all_reduce_mean_


class PerTaskGrads(Balancer):
    """Shared machinery: accumulate ∇_shared L_t per task into flat buffers."""

    per_task_grads = True

    @staticmethod
    def shared_paths(options: BalancingConfig) -> list[str]:
        """Module paths of the shared parameters whose per-task gradients are combined."""
        raise NotImplementedError

    def __init__(self, options: BalancingConfig, tasks: list[str], model: nn.Module, trainable: list[nn.Parameter],
                 seed: int = 0) -> None:
        super().__init__(options, tasks, model, trainable, seed)
        ids = {id(p) for p in trainable}
        shared = [p for p in module_params(model, self.shared_paths(options)) if id(p) in ids]
        if not shared:
            raise ValueError(f"balancing '{self.name}': no trainable shared parameters found (check the "
                             "shared module paths; a frozen trunk leaves nothing to balance)")
        self.shared = shared
        ids = {id(p) for p in shared}
        self.others = [p for p in trainable if id(p) not in ids]
        self.numel = sum(p.numel() for p in shared)
        self.buffers_: Tensor | None = None  # [T, numel], allocated on first use
        self.used = torch.zeros(len(shared))  # which shared params got a gradient this step (any task)

    def _accumulate(self, losses: dict[str, Tensor], scale: float, with_others: bool) -> None:
        if self.buffers_ is None:
            self.buffers_ = torch.zeros(len(self.tasks), self.numel, device=self.shared[0].device)
        params = self.shared + (self.others if with_others else [])
        names = sorted(losses)
        for i, t in enumerate(names):
            grads = torch.autograd.grad(losses[t] * scale, params, retain_graph=i < len(names) - 1 or not with_others,
                                        allow_unused=True)
            row = self.buffers_[self.tasks.index(t)]
            offset = 0
            for k, (p, g) in enumerate(zip(self.shared, grads[:len(self.shared)], strict=True)):
                if g is not None:
                    row[offset:offset + p.numel()] += g.reshape(-1).float()
                    self.used[k] = 1.0
                offset += p.numel()
            if with_others:
                for p, g in zip(self.others, grads[len(self.shared):], strict=True):
                    if g is not None:
                        p.grad = g.detach().clone() if p.grad is None else p.grad + g

    def _reduced_buffers(self) -> Tensor:
        if self.buffers_ is None:
            self.buffers_ = torch.zeros(len(self.tasks), self.numel, device=self.shared[0].device)
        used = self.used.to(self.buffers_.device)
        all_reduce_mean_([self.buffers_, used])
        self.used = used.cpu()
        return self.buffers_

    def _write_shared(self, flat: Tensor) -> None:
        """Shared gradients from the combined flat vector; parameters no task reached on any rank
        keep ``grad=None`` (the optimizer skips them, as in a single process)."""
        offset = 0
        for p, u in zip(self.shared, self.used.tolist(), strict=True):
            g = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            if u == 0:
                p.grad = None
                continue
            p.grad = g.clone() if p.grad is None else p.grad.copy_(g)

    def discard(self) -> None:
        """Forget this step's per-task gradients (non-finite step)."""
        if self.buffers_ is not None:
            self.buffers_.zero_()
        self.used.zero_()


