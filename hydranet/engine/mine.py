"""``mine``: stream an unlabelled pool through a model and the triggers, return a ranked queue.

Memory is bounded for any pool size: frames stream through in batches; only the ``budget ×
oversample`` best candidates (combined score, embedding, per-trigger scores, reason) are kept in a
min-heap, plus each trigger's own bounded state (flicker keeps one previous frame). At the end the
candidates go through score-weighted greedy k-centre (``select.py``) and the first ``budget``
picks are the queue.

Combined score = Σ wₜ·sₜ / Σ wₜ over the triggers t (weights from ``name*weight``). A trigger that
raises on a frame contributes nothing to that frame; the frame is still scored by the others, and
the failure is counted per trigger and reported (first messages kept) — never lost.

Under ``torchrun`` each rank mines a contiguous block of the pool (so sequences stay whole for the
flicker trigger) and rank 0 gathers every rank's candidates and counts, then selects and writes.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from hydranet.data import collate
from hydranet.engine.pool import frame_embeddings, frame_metadata
from hydranet.engine.select import k_centre
from hydranet.engine.triggers.base import BatchContext, FrameContext, Trigger, TriggerError, create_trigger
from hydranet.eval import Evaluator

_MAX_ERROR_MESSAGES = 20


@dataclass
class _Candidate:
    """One scored pool frame: weighted total ``score``, per-trigger ``scores`` (``None`` = the trigger
    raised) and ``reasons``, and the L2-normalised float16 ``embedding`` [D] used for diverse selection."""

    index: int  # into the pool dataset
    frame_id: str  # "<scene_id>#<frame_index>"
    scene_id: str
    frame_index: int
    score: float
    scores: dict[str, float | None]
    reasons: dict[str, str]
    embedding: np.ndarray  # float16 [D], L2-normalised
    metadata: dict[str, Any] = field(default_factory=dict)

    def reason(self, weights: dict[str, float]) -> str:
        """The reasons of the triggers that contributed most, strongest first."""
        ranked = sorted(((weights[t] * (s or 0.0), t) for t, s in self.scores.items()), reverse=True)
        words = [self.reasons[t] for c, t in ranked if c > 0][:3]
        failed = [self.reasons[t] for t, s in self.scores.items() if s is None]
        return "; ".join(words + failed) or "no trigger fired"


@dataclass
class MineResult:
    """The outcome of ``mine``: the queue rows (pick order), frames scored over all ranks, trigger
    error counts and messages, mean score per trigger, the selection radius and the wall time (s)."""

    queue: list[dict[str, Any]]
    frames: int  # frames scored (all ranks)
    errors: dict[str, int]  # trigger -> frames it raised on
    error_messages: list[str]
    trigger_means: dict[str, float]  # mean score per trigger over the pool
    radius: float
    seconds: float
    world_size: int = 1


def build_triggers(specs: list[tuple[str, float, dict[str, Any]]], tasks: list[str]) -> list[tuple[Trigger, float]]:
    """Instantiate ``(name, weight, options)`` specs as ``(Trigger, weight)`` pairs and ``check`` each
    against the model's ``tasks``.

    Raises ``TriggerError`` for a duplicated trigger (``condition``, ``entropy`` and ``rare`` may repeat
    with other options), a negative or non-finite weight, an unknown name or a missing head."""
    out = []
    names = [n for n, _, _ in specs]
    dup = sorted({n for n in names if names.count(n) > 1 and n not in ("condition", "entropy", "rare")})
    if dup:
        raise TriggerError(f"trigger(s) {dup} given twice")
    for name, w, options in specs:
        if w < 0 or not math.isfinite(w):
            raise TriggerError(f"trigger '{name}': weight must be a finite number >= 0, got {w}")
        trig = create_trigger(name, **options)
        trig.check(tasks)
        out.append((trig, w))
    return out


def _trigger_key(trig: Trigger, taken: set[str]) -> str:
    """A unique column name: ``entropy/drivable``, ``condition/night`` for parametrised triggers."""
    key = trig.name
    for opt in ("task", "name"):
        if opt in trig.options:
            key = f"{trig.name}/{trig.options[opt]}"
    base, n = key, 2
    while key in taken:
        key, n = f"{base}#{n}", n + 1
    taken.add(key)
    return key


def rank_block(n: int, rank: int, world: int) -> range:
    """Contiguous block of ``range(n)`` for ``rank`` of ``world`` (sizes differ by at most one)."""
    return range(rank * n // world, (rank + 1) * n // world)


def _strip(samples: list) -> Any:
    for s in samples:
        s.labels = {}
    return collate(samples)


@dataclass
class _Tally:
    """Per-trigger error counts, the first error messages and score sums of the frames scored so far."""

    errors: dict[str, int]
    messages: list[str]
    sums: dict[str, float]

    @classmethod
    def empty(cls, keys: list[str]) -> _Tally:
        """Zero counts and sums for ``keys``, no messages."""
        return cls(dict.fromkeys(keys, 0), [], dict.fromkeys(keys, 0.0))

    def add(self, other: _Tally) -> None:
        """Fold another rank's tally into this one (messages capped at ``_MAX_ERROR_MESSAGES``)."""
        self.messages += other.messages[: _MAX_ERROR_MESSAGES - len(self.messages)]
        for k in self.errors:
            self.errors[k] += other.errors[k]
            self.sums[k] += other.sums[k]


def _score_frame(fc: FrameContext, keys: list[str], triggers: list[tuple[Trigger, float]], index: int,
                 tally: _Tally) -> tuple[dict[str, float | None], dict[str, str]]:
    """Every trigger's score of one frame, clamped to [0, 1], and its reason. A trigger that raises or
    returns a non-finite score gets ``None`` and is counted and reported in ``tally``: its bug must not
    lose the frame."""
    scores: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for key, (trig, _) in zip(keys, triggers, strict=True):
        try:
            s = trig.score(fc)
            value = float(s.value)
            if not math.isfinite(value):
                raise ValueError(f"non-finite score {value}")
            scores[key], reasons[key] = min(max(value, 0.0), 1.0), s.reason
            tally.sums[key] += scores[key]  # type: ignore[operator]
        except Exception as e:  # a trigger's bug must not lose the frame: count it, report it
            tally.errors[key] += 1
            scores[key], reasons[key] = None, f"{key} failed: {type(e).__name__}: {e}"
            if len(tally.messages) < _MAX_ERROR_MESSAGES:
                tally.messages.append(f"{fc.frame_id} (pool index {index}): {reasons[key]}")
    return scores, reasons


def _keep_best(heap: list[tuple[float, int, _Candidate]], keep: int, item: tuple[float, int, _Candidate]) -> None:
    """Offer ``item`` (score, tie-breaker, candidate) to the min-heap of the ``keep`` best-scored so far."""
    if len(heap) < keep:
        heapq.heappush(heap, item)
    elif item[0] > heap[0][0]:
        heapq.heapreplace(heap, item)


def _gather_on_rank0(dist: Any, rank: int, world: int, local: Any) -> list[Any] | None:
    """Every rank's ``local`` (candidates, frame count, tally), in rank order, on rank 0; None elsewhere."""
    gathered: list[Any] = [None] * world if rank == 0 else []
    dist.gather_object(local, gathered if rank == 0 else None, dst=0)
    return gathered if rank == 0 else None


def mine(model: Any, pool: Dataset, triggers: list[tuple[Trigger, float]], budget: int, *, oversample: int = 4,
         batch_size: int = 4, num_workers: int = 0, radius: float | None = None, shadow: Any = None,
         limit: int | None = None, exclude: set[int] | frozenset[int] = frozenset(),
         max_per_scene: int | None = None,
         on_progress: Callable[[int, int], None] | None = None) -> MineResult | None:
    """Mine ``pool``; returns the result on rank 0 (``None`` on other ranks under torchrun).

    ``exclude``: pool indices never to queue (frames labelled in earlier iterations); they are still
    read in order, so sequence-aware triggers see them. ``max_per_scene``: at most this many queued
    frames of one scene (a hard scene's consecutive frames otherwise fill the queue; the queue is
    shorter than ``budget`` when the candidates' scenes run out). Raises ``ValueError`` when ``budget``
    or ``max_per_scene`` is below 1."""
    import torch.distributed as dist

    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if max_per_scene is not None and max_per_scene < 1:
        raise ValueError(f"max_per_scene must be >= 1, got {max_per_scene}")
    t0 = time.perf_counter()
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    total = len(pool) if limit is None else min(limit, len(pool))  # type: ignore[arg-type]
    block = rank_block(total, rank, world)
    keys: list[str] = []
    taken: set[str] = set()
    for trig, _ in triggers:
        keys.append(_trigger_key(trig, taken))
    weights = dict(zip(keys, (w for _, w in triggers), strict=True))
    wsum = sum(weights.values()) or 1.0
    keep = budget * max(oversample, 1)
    heap: list[tuple[float, int, _Candidate]] = []
    tie = itertools.count()
    tally = _Tally.empty(keys)
    loader = DataLoader(Subset(pool, list(block)), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_strip)
    # A network runs each frame alone and exposes its camera features for the embedding; a temporal graph only
    # runs with its memory, so the pool streams through it in order (the Evaluator's default).
    predictor = Evaluator(model, score=False, keep_features=True)
    shadow_predictor = None if shadow is None else Evaluator(shadow, score=False)
    done = 0
    for batch in loader:
        start = block.start + done
        prediction = predictor.step(batch)
        emb = frame_embeddings(prediction)
        shadow_prediction = shadow_predictor.step(batch) if shadow_predictor is not None else None
        meta = [frame_metadata(pool, start + i) for i in range(len(batch))]
        ctx = BatchContext(prediction, model, meta, shadow_prediction, shadow)
        for i in range(len(batch)):
            fc = FrameContext(ctx, i)
            scores, reasons = _score_frame(fc, keys, triggers, start + i, tally)
            combined = sum(weights[k] * (v or 0.0) for k, v in scores.items()) / wsum
            cand = _Candidate(start + i, fc.frame_id, fc.scene_id, fc.frame_index, combined, scores, reasons,
                             emb[i].astype(np.float16), meta[i])
            if cand.index not in exclude:
                _keep_best(heap, keep, (combined, next(tie), cand))
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(block))
    cands = [c for _, _, c in heap]
    frames = done
    if distributed:
        gathered = _gather_on_rank0(dist, rank, world, (cands, frames, tally))
        if gathered is None:
            return None
        cands, frames, tally = [], 0, _Tally.empty(keys)
        for c, f, other in gathered:
            cands += c
            frames += f
            tally.add(other)
    cands.sort(key=lambda c: (-c.score, c.index))
    cands = cands[:keep]
    queue, sel_radius = _select(cands, budget, radius, weights, max_per_scene)
    means = {k: (tally.sums[k] / max(frames - tally.errors[k], 1)) for k in keys}
    return MineResult(queue, frames, tally.errors, tally.messages, means, sel_radius, time.perf_counter() - t0,
                      world)


def _select(cands: list[_Candidate], budget: int, radius: float | None, weights: dict[str, float],
            max_per_scene: int | None = None) -> tuple[list[dict[str, Any]], float]:
    """The queue: ``budget`` candidates picked by ``k_centre`` (score-ordered, spread in embedding space, at
    most ``max_per_scene`` of a scene), each with its rank, scores, reason, metadata and nearest earlier pick;
    and the radius used."""
    if not cands:
        return [], 0.0
    scenes = np.array([str(c.scene_id) for c in cands]) if max_per_scene is not None else None
    sel = k_centre(np.array([c.score for c in cands]), np.stack([c.embedding.astype(np.float32) for c in cands]),
                   budget, radius, groups=scenes, max_per_group=max_per_scene)
    queue: list[dict[str, Any]] = []
    for rank_i, j in enumerate(sel.order):
        c = cands[j]
        near = sel.nearest[rank_i]
        queue.append({"rank": rank_i + 1, "index": c.index, "frame_id": c.frame_id, "scene_id": c.scene_id,
                      "frame_index": c.frame_index, "score": round(c.score, 6),
                      "scores": {k: (None if v is None else round(v, 6)) for k, v in c.scores.items()},
                      "reason": c.reason(weights), "metadata": c.metadata,
                      "nearest_pick": None if near < 0 else queue[near]["frame_id"],
                      "nearest_distance": None if near < 0 else round(sel.distance[rank_i], 4)})
    return queue, sel.radius


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by ``torchrun``), 1 when unset."""
    return int(os.environ.get("WORLD_SIZE", "1"))


