"""Near-duplicate removal: score-weighted greedy k-centre on trunk embeddings.

Consecutive frames of a drive look alike; a queue of the 100 top-scoring frames can be 100 frames
of the same intersection. Greedy k-centre (Gonzalez 1985; the "core-set" selection of Sener &
Savarese, ICLR 2018) picks, one at a time, the candidate farthest from everything picked so far.
Here the pick maximises ``score × min(1, d / radius)`` where ``d`` is the candidate's distance to
its nearest pick: among frames farther than ``radius`` from every pick the trigger score decides;
a frame within ``radius`` of a pick is discounted in proportion — a near-duplicate only wins when
nothing else is left. ``radius`` "auto" = the median distance between a candidate and its nearest
other candidate (consecutive frames are each other's nearest neighbour).

Embeddings are L2-normalised, so ``d`` is the Euclidean distance on the unit sphere ∈ [0, 2].

The discount only spreads picks out; ``max_per_group`` (``hydranet mine --max-per-scene``) is a hard cap on the
picks that share a group id (a scene), for pools where one hard scene would otherwise fill the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Selection:
    """Diverse selection result: candidate indices in pick order; for each pick the position (in
    ``order``) of its nearest earlier pick (-1 for the first) and the embedding distance to it; the
    ``radius`` the selection used."""

    order: list[int]  # candidate indices in pick order
    nearest: list[int]  # per pick: index (into ``order``) of the closest earlier pick, -1 for the first
    distance: list[float]  # per pick: distance to that earlier pick
    radius: float


def _auto_radius(emb: np.ndarray) -> float:
    """Median nearest-other-candidate distance (0 for fewer than 2 candidates)."""
    if len(emb) < 2:
        return 0.0
    d = _pairwise(emb)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(1)))


def _pairwise(emb: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix ``[M, M]`` between the rows of ``emb`` ``[M, D]`` (clamped at 0 before the root)."""
    sq = (emb * emb).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0.0))


def k_centre(scores: np.ndarray, emb: np.ndarray, k: int, radius: float | None = None,
             groups: np.ndarray | None = None, max_per_group: int | None = None) -> Selection:
    """Pick ``k`` of ``len(scores)`` candidates; ``emb`` float ``[M, D]`` L2-normalised. With ``groups``
    (``[M]`` ids, e.g. the scene of each frame) and ``max_per_group``, a group that holds that many picks
    takes no more: fewer than ``k`` picks when the groups run out.

    Raises ``ValueError`` on mismatched lengths, non-finite inputs, ``max_per_group`` < 1, or
    ``max_per_group`` without ``groups``."""
    m = len(scores)
    if emb.shape[0] != m:
        raise ValueError(f"k_centre: {m} scores but {emb.shape[0]} embeddings")
    if max_per_group is not None:
        if max_per_group < 1:
            raise ValueError(f"k_centre: max_per_group must be >= 1, got {max_per_group}")
        if groups is None or len(groups) != m:
            raise ValueError(f"k_centre: max_per_group needs one group id per candidate ({m})")
    if not (np.isfinite(scores).all() and np.isfinite(emb).all()):
        raise ValueError("k_centre: scores and embeddings must be finite")
    emb = emb.astype(np.float64)
    r = _auto_radius(emb) if radius is None else float(radius)
    k = min(k, m)
    order: list[int] = []
    nearest: list[int] = []
    dist_out: list[float] = []
    if k == 0:
        return Selection(order, nearest, dist_out, r)
    s = np.maximum(scores.astype(np.float64), 0.0) + 1e-9  # ties and zero scores still order by distance
    dmin = np.full(m, np.inf)
    near = np.full(m, -1)
    taken = np.zeros(m, dtype=bool)
    per_group: dict[Any, int] = {}
    for step in range(k):
        factor = np.ones(m) if r <= 0 else np.minimum(1.0, dmin / r)
        value = np.where(taken, -np.inf, s * factor)
        j = int(np.argmax(value))
        if not np.isfinite(value[j]):
            break  # every candidate is taken or its group is full
        order.append(j)
        nearest.append(int(near[j]))
        dist_out.append(float(dmin[j]) if np.isfinite(dmin[j]) else float("nan"))
        taken[j] = True
        if max_per_group is not None:
            g = groups[j]  # type: ignore[index]
            per_group[g] = per_group.get(g, 0) + 1
            if per_group[g] >= max_per_group:
                taken |= groups == g  # type: ignore[operator]
        d = np.sqrt(np.maximum(((emb - emb[j]) ** 2).sum(1), 0.0))
        closer = d < dmin
        dmin = np.where(closer, d, dmin)
        near = np.where(closer, step, near)
    return Selection(order, nearest, dist_out, r)
