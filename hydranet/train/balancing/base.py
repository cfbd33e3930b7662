"""Pluggable multi-task loss balancing, correct under data parallelism: the protocol, its options, the registry.

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

from typing import Any

import torch
from pydantic import ConfigDict, Field, field_validator
from torch import Tensor, nn

from hydranet.registry import Options, Registry
from hydranet.train.distributed import all_reduce_grads

# Built-ins: the modules of this package (one file per strategy); plug-ins: the ``hydranet.balancers`` entry points.
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


def module_params(model: nn.Module, paths: list[str]) -> list[nn.Parameter]:
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


def create_balancer(cfg: BalancingConfig, tasks: list[str], model: nn.Module, trainable: list[nn.Parameter],
                    seed: int = 0) -> Balancer:
    """The registered balancer ``cfg.kind`` (``static``, ``uncertainty``, ``pcgrad``, ``gradnorm`` or a plug-in's)
    for ``tasks``; ``seed`` seeds PCGrad's task order. Raises ``RegistryError`` for an unknown kind and
    ``ValueError`` when, for pcgrad/gradnorm, the configured shared module paths hold no trainable parameter of
    ``model``."""
    return BALANCERS.create(cfg.kind, cfg, where="train.balancing", tasks=tasks, model=model, trainable=trainable,
                            seed=seed)
