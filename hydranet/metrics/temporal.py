"""Metrics that need time: occlusion persistence and flicker (velocity error is nuScenes' ``ave``).

Both metrics below read a frame's place in its sequence from the target's ``sequence`` entry,
``(scene_id, frame_index)``, which a streaming ``hydranet.eval.Evaluator`` adds (``evaluate_clips``, the
suite runner with ``sequence:`` set). Without it they report nothing (a single-frame evaluation has no history),
and the metric is exactly its parent: nothing else changes.

``TemporalDetection3DMetric`` (objects3d) adds to ``Detection3DMetric`` (mAP, mATE…, ``ave`` = mAVE in
m/s, nuScenes' definition):

- ``occluded_recall``: over ground-truth objects inside the BEV grid that are *occluded now*
  (``visible`` < ``visible_threshold`` in every camera) but were visible in at least one of the
  previous ``history`` frames of the sequence, the fraction found — a same-class prediction with
  score >= ``score_threshold`` whose BEV centre is within ``TP_THRESHOLD`` (2 m), each prediction
  used once, by descending score (the matching of ``Detection3DMetric`` at the TP threshold).
  ``visible_recall`` is the same on objects visible now, for comparison; ``occluded_objects`` the count.
- ``flicker``: over pairs of consecutive frames where a ground-truth object (by ``track_id``) inside
  the grid is present in both and found in at least one, the fraction where its found/missed status
  changes. Pairs where it is missed in both do not count: a detector that finds nothing would
  otherwise score a perfect 0 (it is undefined instead).

``TemporalTrafficLightMetric`` adds ``flicker`` to ``TrafficLightMetric``: over ground-truth lights
(by ``track_id``) present in consecutive frames, the fraction whose reported state — the state of the
highest-scoring IoU-matched prediction over the cameras, or "missed" — changes.

The history lives in the metric (per scene, the last ``history`` frames), so frames of a sequence
must reach ``update`` in order; a frame index that does not follow the previous one starts over.
Records stay per frame, so ``compute_frames`` (the gate's bootstrap) and DDP ``sync`` work unchanged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from hydranet.data import LIGHT_STATES
from hydranet.metrics.base import NO_GROUND_TRUTH
from hydranet.metrics.detection3d import TP_THRESHOLD, Detection3DMetric
from hydranet.metrics.frame_records import as_numpy, safe_div
from hydranet.metrics.traffic_light import TrafficLightMetric, greedy_match

TEMPORAL_KEYS_3D = ("occluded_recall", "visible_recall", "occluded_objects", "flicker")


class _History:
    """The last ``size`` frames of the current sequence: ``{track_id: value}`` per frame."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.where: tuple[str, int] | None = None
        self.frames: deque[dict[int, Any]] = deque(maxlen=size)

    def step(self, sequence: Any) -> bool:
        """Move to ``sequence`` = (scene_id, frame_index); False (and an empty history) when it does not
        follow the previous frame."""
        scene, index = str(sequence[0]), int(sequence[1])
        follows = self.where is not None and self.where[0] == scene and index == self.where[1] + 1
        if not follows:
            self.frames.clear()
        self.where = (scene, index)
        return follows

    def push(self, values: dict[int, Any]) -> None:
        self.frames.append(values)


def _match_found(p_box: np.ndarray, p_cls: np.ndarray, p_score: np.ndarray, g_box: np.ndarray,
                 g_cls: np.ndarray, thr: float) -> np.ndarray:
    """Which ground-truth objects are found: greedy by descending score, same class, centre distance < thr."""
    found = np.zeros(len(g_box), bool)
    if len(p_box) == 0 or len(g_box) == 0:
        return found
    dist = np.hypot(p_box[:, None, 0] - g_box[None, :, 0], p_box[:, None, 1] - g_box[None, :, 1])
    for i in np.argsort(-p_score, kind="mergesort"):
        d = np.where((g_cls == p_cls[i]) & ~found, dist[i], np.inf)
        j = int(np.argmin(d))
        if d[j] < thr:
            found[j] = True
    return found


class TemporalDetection3DMetric(Detection3DMetric):
    """``Detection3DMetric`` + ``occluded_recall``, ``visible_recall``, ``occluded_objects``, ``flicker``.

    ``grid_extent``: (x_min, x_max, y_min, y_max) of the BEV grid in ego metres (objects outside
    cannot be detected and are not counted by the temporal keys); ``None`` counts every object.
    """

    extra_names = TEMPORAL_KEYS_3D

    def __init__(self, classes: Sequence[str], *, history: int = 5, visible_threshold: float = 0.05,
                 score_threshold: float = 0.3, grid_extent: tuple[float, float, float, float] | None = None,
                 **kwargs: Any) -> None:
        if history < 1:
            raise ValueError(f"TemporalDetection3DMetric: history must be >= 1 frame, got {history}")
        self.history, self.visible_threshold, self.score_threshold = history, visible_threshold, score_threshold
        self.grid_extent = grid_extent
        self._hist = _History(history)
        super().__init__(classes, **kwargs)

    def reset(self) -> None:
        """Drop every record and the per-scene history."""
        super().reset()
        self._hist = _History(self.history)

    def frame_record(self, pred: Any, target: Any, where: str) -> dict[str, np.ndarray]:
        """``Detection3DMetric``'s record + ``temporal`` counts ``[6]`` (occluded found/total, visible
        found/total, status changes/pairs) when the target carries ``sequence``; advances the history.
        Raises ``ValueError`` when such a target lacks ``track_id``/``visible`` or their lengths differ."""
        rec = super().frame_record(pred, target, where)
        if "sequence" not in target:
            return rec
        if "track_id" not in target or "visible" not in target:
            raise ValueError(f"{where} target: temporal metrics need 'track_id' and 'visible' in the objects3d "
                             f"label; got {sorted(target)}")
        g_box = as_numpy(target["boxes"], np.float64).reshape(-1, 7)
        g_cls = as_numpy(target["classes"], np.int64).reshape(-1)
        tracks = as_numpy(target["track_id"], np.int64).reshape(-1)
        visible = as_numpy(target["visible"], np.float64).reshape(-1)
        if not (len(g_box) == len(tracks) == len(visible)):
            raise ValueError(f"{where} target: boxes/track_id/visible lengths differ")
        p_box = as_numpy(pred["boxes"], np.float64).reshape(-1, 7)
        p_score = as_numpy(pred["scores"], np.float64).reshape(-1)
        keep = p_score >= self.score_threshold
        found = _match_found(p_box[keep], as_numpy(pred["classes"], np.int64).reshape(-1)[keep], p_score[keep],
                             g_box, g_cls, TP_THRESHOLD)
        inside = np.ones(len(g_box), bool)
        if self.grid_extent is not None:
            x0, x1, y0, y1 = self.grid_extent
            inside = (g_box[:, 0] >= x0) & (g_box[:, 0] < x1) & (g_box[:, 1] >= y0) & (g_box[:, 1] < y1)
        follows = self._hist.step(target["sequence"])
        seen_before = {t for frame in self._hist.frames for t, (vis, _) in frame.items() if vis}
        now_visible = visible >= self.visible_threshold
        occluded = inside & ~now_visible & np.array([int(t) in seen_before for t in tracks], bool)
        counts = np.zeros(6, np.int64)  # occ_found, occ_total, vis_found, vis_total, toggles, pairs
        counts[0], counts[1] = int((found & occluded).sum()), int(occluded.sum())
        counts[2], counts[3] = int((found & inside & now_visible).sum()), int((inside & now_visible).sum())
        last = self._hist.frames[-1] if follows and self._hist.frames else {}
        for t, f, ok in zip(tracks.tolist(), found.tolist(), inside.tolist(), strict=True):
            if ok and t in last and (last[t][1] or f):  # missed twice is not stability
                counts[5] += 1
                counts[4] += int(last[t][1] != f)
        self._hist.push({t: (bool(v), bool(f)) for t, v, f in zip(tracks.tolist(), now_visible.tolist(),
                                                                   found.tolist(), strict=True)})
        rec["temporal"] = counts
        return rec

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """The parent's results + ``occluded_recall``, ``visible_recall``, ``occluded_objects`` and
        ``flicker`` when some frame carried ``sequence``."""
        out = super().compute_frames(frames, keys)
        recs = [r["temporal"] for r in self.records(frames) if "temporal" in r]
        if not recs:
            return out
        c = np.sum(recs, axis=0)
        out |= {"occluded_recall": float(safe_div(c[0], c[1])), "visible_recall": float(safe_div(c[2], c[3])),
                "occluded_objects": float(c[1]), "flicker": float(safe_div(c[4], c[5]))}
        return out

    def undefined_reason(self, key: str) -> str:
        """``NO_GROUND_TRUTH`` for ``occluded_recall``/``visible_recall``/``flicker`` without an object occluded
        now / visible now / present in two consecutive frames; the parent's reasons for the rest."""
        if key not in TEMPORAL_KEYS_3D:
            return super().undefined_reason(key)
        recs = [r["temporal"] for r in self.records(None) if "temporal" in r]
        c = np.sum(recs, axis=0) if recs else np.zeros(6, np.int64)
        den = {"occluded_recall": c[1], "visible_recall": c[3], "flicker": c[5]}.get(key, 1)
        return NO_GROUND_TRUTH if den == 0 else super().undefined_reason(key)


class TemporalTrafficLightMetric(TrafficLightMetric):
    """``TrafficLightMetric`` + ``flicker`` of the reported state of each light between consecutive frames."""

    extra_names = ("flicker",)

    def __init__(self, states: Sequence[str] = LIGHT_STATES, iou_threshold: float = 0.5,
                 score_threshold: float = 0.3) -> None:
        self.score_threshold = score_threshold
        self._hist = _History(1)
        super().__init__(states, iou_threshold)

    def reset(self) -> None:
        """Drop every record and the history."""
        super().reset()
        self._hist = _History(1)

    def frame_record(self, pred: Any, target: Any, where: str) -> Any:
        """``TrafficLightMetric``'s record, paired with ``[changes, pairs]`` of each light's reported state
        vs the previous frame when the target carries ``sequence``. Raises ``ValueError`` when such a
        target lacks ``track_id``."""
        rec = super().frame_record(pred, target, where)
        if "sequence" not in target:
            return rec
        if "track_id" not in target:
            raise ValueError(f"{where} target: light flicker needs 'track_id' in the traffic_light label")
        pb, ps = as_numpy(pred["boxes"], np.float64).reshape(-1, 4), as_numpy(pred["scores"], np.float64).reshape(-1)
        pc, pst = as_numpy(pred["camera"], np.int64).reshape(-1), as_numpy(pred["state"], np.int64).reshape(-1)
        keep = ps >= self.score_threshold
        pb, ps, pc, pst = pb[keep], ps[keep], pc[keep], pst[keep]
        gb, gc = as_numpy(target["boxes"], np.float64).reshape(-1, 4), as_numpy(target["camera"], np.int64).reshape(-1)
        tracks = as_numpy(target["track_id"], np.int64).reshape(-1)
        best: dict[int, tuple[float, int]] = {int(t): (-1.0, -1) for t in tracks}  # track -> (score, state)
        for cam in np.union1d(pc, gc):
            pi, gi = np.flatnonzero(pc == cam), np.flatnonzero(gc == cam)
            for a, b in greedy_match(pb[pi], ps[pi], gb[gi], self.iou_threshold):
                t = int(tracks[gi[b]])
                if ps[pi[a]] > best[t][0]:
                    best[t] = (float(ps[pi[a]]), int(pst[pi[a]]))
        follows = self._hist.step(target["sequence"])
        last = self._hist.frames[-1] if follows and self._hist.frames else {}
        toggles = pairs = 0
        for t, (_, state) in best.items():
            if t in last:
                pairs += 1
                toggles += int(last[t] != state)
        self._hist.push({t: state for t, (_, state) in best.items()})
        return (rec, np.array([toggles, pairs], np.int64))

    def records(self, frames: Sequence[int] | np.ndarray | None) -> list[Any]:
        """The ``TrafficLightMetric`` records of ``frames`` (flicker counts stripped)."""
        return [r[0] if isinstance(r, tuple) else r for r in super().records(frames)]

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """The parent's results + ``flicker`` when some frame carried ``sequence``."""
        out = super().compute_frames(frames, keys)
        recs = [r[1] for r in super().records(frames) if isinstance(r, tuple)]
        if recs:
            c = np.sum(recs, axis=0)
            out["flicker"] = float(safe_div(c[0], c[1]))
        return out
