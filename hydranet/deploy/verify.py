"""Checks that an exported graph computes what the PyTorch model computes, and what quantization costs.

- ``parity``: ONNX Runtime vs PyTorch eager on held-out frames, max |difference| per output tensor (a
  temporal graph: both streamed through consecutive frames, each carrying its own memory, and the
  ``new_state.*`` outputs compared too).
- ``metric_drop``: per-task headline change between two ``hydranet.eval.loop.evaluate`` results, signed so that a
  positive drop is always *worse* (AbsRel rising counts as a drop).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from hydranet.data import Batch
from hydranet.deploy.heldout import heldout_batches, heldout_sequence_batches
from hydranet.deploy.runtime import DeployedModel
from hydranet.eval import Evaluator
from hydranet.tasks import Task

PARITY_TOLERANCE = 1e-3  # fp32 max abs difference per output, ORT vs eager


@torch.no_grad()
def parity(model: nn.Module, deployed: DeployedModel, frames: int = 4,
           batches: Iterable[Batch] | None = None) -> dict[str, float]:
    """``{output name: max |ORT - eager|}`` over ``frames`` held-out frames (or the given batches). A temporal
    graph runs ``frames`` consecutive frames of ``manifest.batch`` scenes by default, and its ``new_state.*``
    outputs are compared with the eager model's state after each frame."""
    model.eval()
    m = deployed.manifest
    worst: dict[str, float] = {o.name: 0.0 for o in [*m.outputs, *m.state_outputs]}
    # Each side carries its own memory through the frames, in order (a temporal graph); otherwise frame by frame.
    eager = Evaluator(model, {t: model.task_objects[t] for t in m.tasks}, score=False, stream=deployed.is_temporal)
    graph = Evaluator(deployed, score=False, stream=deployed.is_temporal)
    if batches is None:
        batches = heldout_sequence_batches(m, frames) if deployed.is_temporal else heldout_batches(m, frames, m.batch)
    for batch in batches:
        ref = eager.step(batch).outputs
        got = graph.step(batch).outputs
        for o in m.outputs:
            a, b = got[o.task][o.key], ref[o.task][o.key].float()
            if a.shape != b.shape:
                raise AssertionError(f"output {o.name}: graph shape {tuple(a.shape)} != eager {tuple(b.shape)}")
            worst[o.name] = max(worst[o.name], float((a - b).abs().max()))
        if deployed.is_temporal:
            assert eager.streamer is not None and graph.streamer is not None
            for s in m.state_outputs:
                a = torch.from_numpy(graph.streamer.state[s.feeds])
                b = getattr(eager.streamer.state, s.feeds.removeprefix("state.")).float()
                worst[s.name] = max(worst[s.name], float((a - b).abs().max()))
    return worst


def metric_drop(base: dict[str, dict[str, float]], cand: dict[str, dict[str, float]],
                tasks: dict[str, Task]) -> dict[str, dict[str, Any]]:
    """Per task: headline metric name, base and candidate values, ``drop`` (> 0 = candidate worse)."""
    rows = {}
    for name, task in tasks.items():
        key = next(iter(base[name]))
        b, c = base[name][key], cand[name][key]
        drop = (b - c) if task.higher_is_better else (c - b)
        rows[name] = {"metric": key, "higher_is_better": task.higher_is_better, "base": b, "candidate": c,
                      "drop": drop}
    return rows
