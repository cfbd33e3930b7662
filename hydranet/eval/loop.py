"""The one evaluation loop: forward -> decode -> ``Metric.update`` -> ``compute``.

Every place that scores a network goes through here: the trainer's periodic eval and the demo
(``hydranet.train``), the evaluation suites and the gate (``eval/runner.py``), ``export --verify``,
``quantize`` and the deployed-graph suites (``hydranet.deploy``), and the data engine.

    from hydranet.eval.loop import evaluate, dataset_batches

    results = evaluate(model, dataset_batches(dataset, batch_size=8))      # {task: {metric: float}}
    results = evaluate(deployed, batches, on_frame=lambda f: print(f.index, f.decoded["lanes"]))

What can be evaluated (``model``):
- anything with ``forward_batch(batch, tasks=[...]) -> {task: {key: Tensor}}``: a ``HydraNet``, a
  ``hydranet.deploy.DeployedModel`` (an ONNX graph), a suite adapter;
- or a plain function ``forward(batch, tasks) -> {task: {key: Tensor}}`` (the trainer passes its own,
  which runs under the training precision and DDP wrapper).

``tasks`` defaults to the model's own (``task_objects``, else ``tasks``). Decoding and targets are
the tasks' (``Task.decode``, ``Task.targets``), so a checkpoint and its exported graph are scored
by exactly the same code. ``on_frame`` sees every frame's decoded outputs and targets (the data
engine's triggers, the suites' frame bookkeeping, report thumbnails).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from hydranet.data.sample import Batch, collate
from hydranet.eval.sequence import with_sequence
from hydranet.metrics.base import Metric
from hydranet.tasks.base import Task

Outputs = dict[str, dict[str, Tensor]]
Forward = Callable[..., Outputs]  # forward(batch, tasks, **forward_kwargs) -> outputs


@dataclass
class EvalFrame:
    """One evaluated frame, as the ``on_frame`` hook sees it.

    ``index`` counts frames from 0 over the whole evaluation (batch order); ``position`` is the
    frame's row in ``batch``. ``decoded[task]`` is the task's decoded output for this frame (label
    format, ``Task.decode``), ``targets[task]`` its label or None when the frame lacks it, and
    ``outputs[task][key]`` the raw head tensor of this frame (a view, batch dimension removed).
    """

    index: int
    batch: Batch
    position: int
    decoded: dict[str, Any]
    targets: dict[str, Any]
    outputs: Outputs


def forward_of(model: Any) -> Forward:
    """The ``forward(batch, tasks)`` of ``model``: its ``forward_batch``, or ``model`` itself if it is
    a plain function. Raises ``TypeError`` for anything else."""
    if hasattr(model, "forward_batch"):
        return lambda batch, tasks, **kwargs: model.forward_batch(batch, tasks=tasks, **kwargs)
    if callable(model) and not isinstance(model, nn.Module):
        return model
    raise TypeError(f"cannot evaluate a {type(model).__name__}: expected forward_batch(batch, tasks) "
                    "or a function forward(batch, tasks)")


def stream_of(model: Any) -> Forward:
    """The streaming ``forward(batch, tasks)`` of ``model``: ``model.stream`` (state carried between calls)
    where it has one, else its plain forward (a single-frame model, a temporal ``DeployedModel``)."""
    if hasattr(model, "stream"):
        return lambda batch, tasks, **kwargs: model.stream(batch, tasks, **kwargs)
    return forward_of(model)


def tasks_of(model: Any) -> dict[str, Task]:
    """The tasks a model carries: ``task_objects`` (HydraNet) or ``tasks`` (DeployedModel)."""
    for attr in ("task_objects", "tasks"):
        tasks = getattr(model, attr, None)
        if isinstance(tasks, dict):
            return dict(tasks)
    raise TypeError(f"{type(model).__name__} has no task_objects/tasks: pass tasks= explicitly")


class Evaluator:
    """Streaming evaluation of one model: ``step(batch)`` for each batch, then ``compute()``.

    ``metrics`` may be given (e.g. ``FrameMetric``s whose records a suite keeps); by default each
    task's ``make_metric()``. The evaluator never changes the model's train/eval mode: ``evaluate``
    does that around the loop.
    """

    def __init__(self, model: Any, tasks: dict[str, Task] | None = None,
                 metrics: dict[str, Metric] | None = None, on_frame: Callable[[EvalFrame], None] | None = None,
                 device: torch.device | str | None = None, sequence: bool = False):
        # sequence: batches are consecutive frames of sequences, streamed through the model's memory
        # (``HydraNet.stream``; a temporal ``DeployedModel`` streams by itself) and the targets carry
        # (scene_id, frame_index) for the temporal metrics (hydranet/eval/sequence.py).
        self.sequence = sequence
        self.forward = stream_of(model) if sequence else forward_of(model)
        self.tasks = dict(tasks) if tasks is not None else tasks_of(model)
        self.names = sorted(self.tasks)
        self.metrics = metrics if metrics is not None else {t: self.tasks[t].make_metric() for t in self.names}
        missing = [t for t in self.names if t not in self.metrics]
        if missing:
            raise ValueError(f"no metric for task(s) {missing}")
        self.on_frame = on_frame
        self.device = device
        self.frames = 0

    @torch.no_grad()
    def step(self, batch: Batch, **forward_kwargs: Any) -> Outputs:
        """Forward one batch, decode every task and update its metric; returns the raw outputs.
        ``forward_kwargs`` go to the forward (e.g. ``camera_valid [B, N]`` for failed cameras)."""
        if self.device is not None:
            batch = batch.to(self.device)
        outputs = self.forward(batch, self.names, **forward_kwargs)
        decoded, targets = {}, {}
        for t in self.names:
            decoded[t] = self.tasks[t].decode(outputs[t], batch)
            targets[t] = self.tasks[t].targets(batch)
            scored = with_sequence(targets[t], batch) if self.sequence else targets[t]
            self.metrics[t].update(decoded[t], scored)
        if self.on_frame is not None:
            for i in range(len(batch)):
                self.on_frame(EvalFrame(
                    index=self.frames + i, batch=batch, position=i,
                    decoded={t: decoded[t][i] for t in self.names}, targets={t: targets[t][i] for t in self.names},
                    outputs={t: {k: v[i] for k, v in outputs[t].items()} for t in self.names}))
        self.frames += len(batch)
        return outputs

    def compute(self, sync: bool = False) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` (first key = the task's headline); ``sync`` merges DDP ranks first."""
        results = {}
        for t in self.names:
            if sync:
                self.metrics[t].sync()
            results[t] = {k: float(v) for k, v in self.metrics[t].compute().items()}
        return results


@torch.no_grad()
def evaluate(model: Any, batches: Iterable[Batch], tasks: dict[str, Task] | None = None, *,
             device: torch.device | str | None = None, on_frame: Callable[[EvalFrame], None] | None = None,
             sync: bool = False, model_module: nn.Module | None = None) -> dict[str, dict[str, float]]:
    """Score ``model`` on ``batches``: ``{task: {metric: value}}``, the first key the headline.

    ``model``: see the module docstring (HydraNet, DeployedModel or ``forward(batch, tasks)``).
    ``tasks``: the tasks to score (default: the model's). ``device``: batches are moved there.
    ``on_frame(EvalFrame)``: called for every frame after its metrics were updated. ``sync``: merge
    metric state across DDP ranks before computing (every rank must call it). An ``nn.Module``
    ``model`` (or ``model_module`` when ``model`` is a function wrapping one) is put in eval mode
    for the loop and restored afterwards.
    """
    module = model if isinstance(model, nn.Module) else model_module
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        evaluator = Evaluator(model, tasks, on_frame=on_frame, device=device)
        for batch in batches:
            evaluator.step(batch)
        return evaluator.compute(sync=sync)
    finally:
        if module is not None:
            module.train(was_training)


def dataset_batches(dataset: Dataset, batch_size: int = 4, max_batches: int | None = None, rank: int = 0,
                    world_size: int = 1, num_workers: int = 0) -> DataLoader:
    """Batches of a map-style dataset of ``Sample`` for ``evaluate``, in index order.

    ``max_batches`` caps the frames at ``max_batches * batch_size * world_size``. Under DDP each
    rank takes a strided share (``rank::world_size``) so the ranks together see every frame once;
    pass ``sync=True`` to ``evaluate`` to merge them.
    """
    n = len(dataset)  # type: ignore[arg-type]
    limit = n if max_batches is None else min(n, max_batches * batch_size * world_size)
    indices = list(range(rank, limit, world_size))
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
