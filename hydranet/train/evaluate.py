"""The evaluation hook: run the model over held-out frames and compute each task's metrics.

Under torchrun every rank evaluates a strided share of the frames and the task metrics'
``sync()`` all-reduces their state, so every rank returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hydranet.data.sample import Batch, collate
from hydranet.tasks.base import Task
from hydranet.train.distributed import DistInfo


def eval_indices(n: int, batch_size: int, max_batches: int | None, dist_info: DistInfo) -> list[int]:
    limit = n if max_batches is None else min(n, max_batches * batch_size * dist_info.world_size)
    return list(range(dist_info.rank, limit, dist_info.world_size))


@torch.no_grad()
def evaluate(model: nn.Module, tasks: dict[str, Task], dataset: Dataset, batch_size: int = 4,
             max_batches: int | None = None, device: torch.device | str = "cpu",
             forward: Callable[[Batch, list[str]], dict[str, Any]] | None = None,
             dist_info: DistInfo | None = None, num_workers: int = 0) -> dict[str, dict[str, float]]:
    """``{task: metrics}``; the first key of each task's metrics is its headline number."""
    dist_info = dist_info or DistInfo()
    was_training = model.training
    model.eval()
    forward = forward or (lambda b, t: model(b.images, b.intrinsics, b.T_ego_from_cam, tasks=t))
    names = sorted(tasks)
    metrics = {t: tasks[t].make_metric() for t in names}
    indices = eval_indices(len(dataset), batch_size, max_batches, dist_info)  # type: ignore[arg-type]
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, collate_fn=collate,
                        num_workers=num_workers)
    for batch in loader:
        batch = batch.to(device)
        outputs = forward(batch, names)
        for t in names:
            metrics[t].update(tasks[t].decode(outputs[t], batch), tasks[t].targets(batch))
    results = {}
    for t in names:
        if dist_info.enabled:
            metrics[t].sync()
        results[t] = {k: float(v) for k, v in metrics[t].compute().items()}
    model.train(was_training)
    return results
