"""Evaluation on sequences: frames streamed in order through the model, so the video memory has its
history and the temporal metrics (``hydranet.metrics.temporal``) see consecutive frames.

A *clip* is a list of consecutive dataset indices of one scene. Per clip the model's stream state is
reset, every frame runs through ``HydraNet.stream`` (a single-frame model just runs ``forward``), and
every frame is scored; the targets carry ``sequence = (scene_id, frame_index)`` so occlusion
persistence and flicker can follow objects across frames. Used by the suite runner (suites with
``sequence:``) and ``benchmarks/temporal.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hydranet.data.sample import Batch, collate
from hydranet.data.sequences import sequence_keys
from hydranet.tasks.base import Task


def clip_indices(anchors: list[int], frames_per_scene: int, length: int) -> list[list[int]]:
    """The clip of ``length`` consecutive frames *ending* at each anchor (shifted to fit inside the anchor's
    scene; shortened when the scene is shorter). Scene ``s`` holds indices ``[s·F, (s+1)·F)``."""
    if length < 1:
        raise ValueError(f"sequence length must be >= 1, got {length}")
    clips = []
    for a in anchors:
        start_of_scene = a - a % frames_per_scene
        n = min(length, frames_per_scene)
        end = max(a, start_of_scene + n - 1)
        clips.append(list(range(end - n + 1, end + 1)))
    return clips


def with_sequence(targets: list[Any], batch: Batch) -> list[Any]:
    """``targets`` (one per sample) with ``sequence = (scene_id, frame_index)`` added to dict targets."""
    return [dict(t, sequence=(batch.scene_id[i], int(batch.frame_index[i]))) if isinstance(t, dict) else t
            for i, t in enumerate(targets)]


def stream_frame(model: nn.Module, batch: Batch, tasks: list[str]) -> dict[str, Any]:
    """One frame of a sequence: ``model.stream`` where the model has one, else ``forward_batch``."""
    if hasattr(model, "stream"):
        return model.stream(batch, tasks)
    return model.forward_batch(batch, tasks)


@torch.no_grad()
def evaluate_sequences(model: nn.Module, dataset: Dataset, clips: list[list[int]], tasks: list[str],
                       device: str | torch.device = "cpu", metrics: dict[str, Any] | None = None,
                       on_frame: Callable[[dict[str, Any], Batch], None] | None = None,
                       ) -> dict[str, dict[str, float]]:
    """Stream every clip through ``model`` and score every frame; returns ``{task: metrics}``.
    ``on_frame(outputs, batch)`` sees every frame's raw outputs (extra diagnostics)."""
    model.eval()
    objs: dict[str, Task] = model.task_objects  # type: ignore[assignment]
    metrics = metrics if metrics is not None else {t: objs[t].make_metric() for t in tasks}
    for clip in clips:
        if hasattr(model, "reset_state"):
            model.reset_state()
        for i in clip:
            batch = collate([dataset[i]]).to(device)
            out = stream_frame(model, batch, tasks)
            if on_frame is not None:
                on_frame(out, batch)
            for t in tasks:
                task = objs[t]
                metrics[t].update(task.decode(out[t], batch), with_sequence(task.targets(batch), batch))
    if hasattr(model, "reset_state"):
        model.reset_state()
    return {t: m.compute() for t, m in metrics.items()}



def scene_runs(dataset: Dataset, limit: int | None = None) -> list[list[int]]:
    """The dataset's indices ``[0, limit)`` split into runs of consecutive frames of one scene (clips)."""
    scenes, frames = sequence_keys(dataset)
    n = len(scenes) if limit is None else min(limit, len(scenes))
    runs: list[list[int]] = []
    for i in range(n):
        if runs and scenes[i] == scenes[i - 1] and frames[i] == frames[i - 1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
