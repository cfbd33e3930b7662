"""Checks that an exported graph computes what the PyTorch model computes, and what quantization costs.

- ``parity``: ONNX Runtime vs PyTorch eager on held-out frames, max |difference| per output tensor, NaN/inf
  when one side is not finite where the other is (a temporal graph: both streamed through consecutive frames,
  each carrying its own memory, and the ``new_state.*`` outputs compared too).
- ``metric_drop``: per-task headline change between two ``hydranet.eval.loop.evaluate`` results, signed so that a
  positive drop is always *worse* (AbsRel rising counts as a drop); ``judge_drop`` applies a limit to one row
  (a candidate undefined where the base was measured fails).
"""

from __future__ import annotations

import math
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


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b|``, non-finite values included: NaN where one side is NaN and the other is not, inf where one
    side is infinite and the other finite (or the opposite infinity). Elements equal on both sides (the same
    infinity, NaN on both) differ by 0. ``max(0.0, nan)`` is 0.0, so a plain running max would drop a NaN output."""
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    d = torch.where(same, torch.zeros_like(a), (a - b).abs())
    if d.numel() == 0:
        return 0.0
    return float("nan") if bool(torch.isnan(d).any()) else float(d.max())


def _worse(worst: float, diff: float) -> float:
    """The running worst difference; a NaN, once seen, stays (``max`` would drop it)."""
    return math.nan if math.isnan(worst) or math.isnan(diff) else max(worst, diff)


@torch.no_grad()
def parity(model: nn.Module, deployed: DeployedModel, frames: int = 4,
           batches: Iterable[Batch] | None = None) -> dict[str, float]:
    """``{output name: max |ORT - eager|}`` over ``frames`` held-out frames (or the given batches); ``nan`` or
    ``inf`` for an output non-finite on one side only (``max_abs_diff``), never within tolerance. A temporal
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
            worst[o.name] = _worse(worst[o.name], max_abs_diff(a, b))
        if deployed.is_temporal:
            assert eager.streamer is not None and graph.streamer is not None
            for s in m.state_outputs:
                a = torch.from_numpy(graph.streamer.state[s.feeds])
                b = getattr(eager.streamer.state, s.feeds.removeprefix("state.")).float()
                worst[s.name] = _worse(worst[s.name], max_abs_diff(a, b))
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


def _undefined(x: float | None) -> bool:
    return x is None or math.isnan(x)


def judge_drop(row: dict[str, Any], max_drop: float) -> tuple[str, str]:
    """``(status, reason)`` of one ``metric_drop`` row against ``max_drop``: ``"fail"`` when the drop exceeds it
    or when the candidate (INT8) is undefined (NaN) where the base (fp32) was measured, as ``hydranet gate`` fails
    a candidate undefined where the baseline was measured (docs/eval.md); ``"n/a"`` when the base is undefined
    (no drop to measure: the same frames, so nothing to hold against the candidate); else ``"ok"``."""
    b, c, drop = row["base"], row["candidate"], row["drop"]
    if _undefined(c) and not _undefined(b):
        return "fail", f"INT8 {row['metric']} is undefined where fp32 measured {b:.4f}"
    if _undefined(b):
        return "n/a", f"fp32 {row['metric']} is undefined" + (" (INT8 too)" if _undefined(c) else "")
    if drop > max_drop:  # worse: a higher-is-better metric dropped, a lower-is-better one (depth's abs_rel) rose
        moved = "dropped" if row["higher_is_better"] else "rose"
        return "fail", f"{row['metric']} {moved} by {drop:.4f} > {max_drop:g}"
    return "ok", ""
