"""Pluggable multi-task loss balancing, correct under data parallelism.

Four strategies share one protocol, driven by the trainer once per micro-batch and once per
optimizer step::

    balancer.backward(losses, scale)   # per micro-batch: accumulate gradients (scale = 1/grad_accum)
    balancer.reduce(step, active)      # per optimizer step: all-reduce across ranks, combine, write .grad

- ``static``: ``Σ w_t L_t`` with fixed weights.
- ``uncertainty`` (Kendall, Gal & Cipolla, CVPR 2018): ``Σ exp(-s_t) L_t + s_t`` with learned
  log-variances ``s_t = log σ_t²`` trained by the same optimizer (no weight decay). This is the
  paper's regression form times 2, which only rescales the step size of ``s``.
- ``gradnorm`` (Chen et al., ICML 2018): weights ``w_t`` (sum T) move so each task's gradient norm
  on the last shared layer, ``G_t = w_t ‖∇_W L_t‖``, approaches ``mean(G) · r_t^α`` where
  ``r_t = (L_t/L_t(0)) / mean(L/L(0))`` is the task's relative inverse training rate.
- ``pcgrad`` (Yu et al., NeurIPS 2020): per-task gradients of the shared parameters; when two
  conflict (negative dot product) each is projected onto the normal plane of the other, in a random
  task order; the projected gradients are summed. Head parameters get the plain sum.

Why this is correct under DDP (the reason most multi-task libraries do not support it):
a gradient-manipulating method is a *non-linear* function of the per-task gradients. If every rank
projected its local per-task gradients and DDP then averaged the results, the update would be
``mean_r(f(g_r))``, not ``f(mean_r(g_r))``: ranks would optimise a different objective than one
process at the same global batch, and the result would depend on the number of GPUs. So:

1. For these two the trainer does not wrap the model in DDP's reducer (``per_task_grads``);
   gradients accumulate locally (like ``no_sync()``) over all micro-batches of the step. ``static``
   and ``uncertainty`` are linear in the summed gradient, so there the trainer wraps the model in
   ``DistributedDataParallel`` with ``no_sync()`` on the accumulation micro-steps, and ``reduce``
   only all-reduces what DDP does not own (the uncertainty log-variances).
2. PCGrad/GradNorm compute per-task gradients with ``torch.autograd.grad`` on the shared
   parameters and accumulate them in per-task flat buffers. At the optimizer step the buffers are
   all-reduced (averaged) *before* projection / norm computation, so every rank sees the global
   per-task gradients, computes the identical combination, and writes identical ``.grad`` values.
   Head gradients (linear in the loss) are simply all-reduced.
3. Randomness (PCGrad's task order) comes from a generator seeded by ``(seed, step)``, identical on
   every rank. GradNorm's loss ratios use all-reduced losses, so its weights stay identical too.
4. Each rank's task loss is weighted by ``n_t,rank · W / n_t,global`` (done by the trainer), so the
   average over ranks of per-rank means is the mean over the global batch even when partial labels
   give ranks different numbers of labelled samples; and the set of tasks in a micro-batch is the
   global one (ranks without a label contribute a connected zero), so all ranks run one sub-graph.

The result is the update one process computes at the same global batch (tested within float
tolerance in tests/train/test_train_distributed.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import ConfigDict, Field, field_validator
from torch import Tensor, nn

from hydranet.registry import Options, Registry
from hydranet.train.distributed import all_reduce_grads, all_reduce_mean_
from hydranet.train.scheduler import stable_seed

# Built-ins: the strategies of this file; plug-ins: the ``hydranet.balancers`` entry-point group.
BALANCERS: Registry[type[Balancer]] = Registry("balancer", package="hydranet.train.balancing")


class GradNormConfig(Options):
    """``train.balancing.gradnorm``: GradNorm's α, the task weights' step size and the last shared layer
    (Chen et al., ICML 2018)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    alpha: float = Field(default=1.5, ge=0)  # restoring force toward equal training rates
    lr: float = Field(default=0.025, gt=0)  # step size of the task weights
    shared: str = "neck"  # dotted module path whose parameters are "the last shared layer"


class BalancingConfig(Options):
    """``train.balancing``: the multi-task loss balancing strategy (``kind``, a registered balancer: ``static``,
    ``uncertainty``, ``gradnorm``, ``pcgrad`` or a plug-in's), its static or initial per-task weights, and the
    shared modules PCGrad / GradNorm work on. Every balancer takes these options."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str = "static"
    weights: dict[str, float] = Field(default_factory=dict)  # static (and initial) weights; default 1
    gradnorm: GradNormConfig = Field(default_factory=GradNormConfig)
    # PCGrad projects the gradients of these modules (the shared sub-graph); heads get plain sums.
    shared: list[str] = Field(default_factory=lambda: ["trunk", "neck", "fusion"])

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in BALANCERS:
            raise ValueError(f"unknown balancer '{v}'; registered balancers: {BALANCERS.names()}")
        return v


def _module_params(model: nn.Module, paths: list[str]) -> list[nn.Parameter]:
    """Trainable parameters of the (existing, non-None) modules at dotted ``paths``."""
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for path in paths:
        mod: Any = model
        for part in path.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if mod is None:
            continue
        if not isinstance(mod, nn.Module):
            raise ValueError(f"balancing: '{path}' is not a module of the model")
        for p in mod.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


@BALANCERS.register(options=BalancingConfig)
class Balancer(nn.Module):
    """Static weighting ``Σ w_t L_t`` (``train.balancing.kind: static``) and the base of the other strategies.

    ``tasks``: every task the trainer may see; ``cfg.weights``: per-task weight (default 1); ``trainable``: the
    parameters whose gradients ``reduce`` all-reduces. Raises ``ValueError`` naming
    ``train.balancing.weights`` for a weight given to an unknown task. Subclasses override ``backward``/``reduce``.
    """

    name = "static"
    # True where the strategy combines per-task gradients non-linearly (PCGrad, GradNorm): those need
    # the explicit per-task all-reduce, so the trainer must not wrap the model in DDP.
    per_task_grads = False

    def __init__(self, options: BalancingConfig, tasks: list[str], model: nn.Module, trainable: list[nn.Parameter],
                 seed: int = 0) -> None:
        super().__init__()
        cfg = options
        unknown = sorted(set(cfg.weights) - set(tasks))
        if unknown:
            raise ValueError(f"train.balancing.weights: unknown task(s) {unknown}; tasks: {sorted(tasks)}")
        self.tasks = sorted(tasks)
        self.cfg = cfg
        self.seed = seed
        self.trainable = trainable
        # Set by the trainer when DistributedDataParallel reduces the model's gradients (then
        # ``reduce`` leaves ``trainable`` alone and all-reduces only the balancer's own parameters).
        self.model_reduced_by_ddp = False
        self.register_buffer("task_weights", torch.tensor([float(cfg.weights.get(t, 1.0)) for t in self.tasks]))

    def weight(self, task: str) -> Tensor:
        """The current weight of ``task``, a 0-d float32 tensor; ``ValueError`` for an unknown task."""
        return self.task_weights[self.tasks.index(task)]

    def weights(self) -> dict[str, float]:
        """``{task: weight}`` as plain floats, for logging."""
        return {t: float(w) for t, w in zip(self.tasks, self.task_weights.tolist(), strict=True)}

    def backward(self, losses: dict[str, Tensor], scale: float) -> float:
        """Accumulate the gradients of ``scale · Σ w_t L_t`` for one micro-batch (``losses``: 0-d tensors of the
        tasks present; ``scale`` = 1/grad_accum); returns the unscaled weighted total as a float."""
        total = sum(self.weight(t).to(loss.dtype) * loss for t, loss in losses.items())
        (total * scale).backward()
        return float(total.detach())

    def reduce(self, step: int, active: list[str]) -> None:
        """At the optimizer step: average the accumulated ``.grad`` of the trainable parameters over ranks
        (a no-op in one process, and left to DDP when it wraps the model). ``step`` and ``active`` (tasks seen
        this step) are used by subclasses."""
        if not self.model_reduced_by_ddp:
            all_reduce_grads(self.trainable)

    def discard(self) -> None:
        """Forget what this step accumulated (non-finite step)."""


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


class _PerTaskGrads(Balancer):
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
        shared = [p for p in _module_params(model, self.shared_paths(options)) if id(p) in ids]
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
        keep ``grad=None`` (AdamW skips them, as in a single process)."""
        offset = 0
        for p, u in zip(self.shared, self.used.tolist(), strict=True):
            g = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            if u == 0:
                p.grad = None
                continue
            p.grad = g.clone() if p.grad is None else p.grad.copy_(g)

    def discard(self) -> None:
        if self.buffers_ is not None:
            self.buffers_.zero_()
        self.used.zero_()


@BALANCERS.register(options=BalancingConfig)
class PCGradBalancer(_PerTaskGrads):
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


@BALANCERS.register(options=BalancingConfig)
class GradNormBalancer(_PerTaskGrads):
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


def create_balancer(cfg: BalancingConfig, tasks: list[str], model: nn.Module, trainable: list[nn.Parameter],
                    seed: int = 0) -> Balancer:
    """The registered balancer ``cfg.kind`` (``static``, ``uncertainty``, ``pcgrad``, ``gradnorm`` or a plug-in's)
    for ``tasks``; ``seed`` seeds PCGrad's task order. Raises ``RegistryError`` for an unknown kind and
    ``ValueError`` when, for pcgrad/gradnorm, the configured shared module paths hold no trainable parameter of
    ``model``."""
    return BALANCERS.create(cfg.kind, cfg, where="train.balancing", tasks=tasks, model=model, trainable=trainable,
                            seed=seed)
