"""Traffic-light state: per-state recall and precision, balanced accuracy, the confusion matrix.

Matching rule: per camera, predicted lights in descending score each take the not-yet-matched
ground-truth light with the highest IoU, a match when IoU >= ``iou_threshold`` (0.5); the state
is ignored for matching. ``confusion/<gt>/<pred>`` counts matched pairs (rows ground truth).

Why not accuracy: lights are mostly green, so a head that calls every light green scored
"accuracy 0.857" on matched lights and passed every suite while it never saw a red light. The
headline is therefore **balanced accuracy** over states, end to end: ``recall/<state>`` = lights of
that state found *with* the right state / all lights of that state (a missed light and a misread
light are both wrong — a missed red is the costly error), and ``balanced_accuracy`` = the mean of
``recall/<state>`` over the states that occur (Brodersen et al., "The balanced accuracy and its
posterior distribution", ICPR 2010). A one-state predictor scores at most 1/(states present), so it
cannot pass. ``precision/<state>`` = predictions of that state that are a light of that state / all
predictions of that state (unmatched predictions count as false). ``state_balanced_accuracy`` is the
same mean on matched lights only (how well a *detected* light's state is read). Kept for context:
``accuracy`` (right state among matched — the flattering number), detection ``recall`` / ``precision``
(matching only) and ``correct_recall`` (found with the right state / all lights, any state).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from hydranet.data import LIGHT_STATES
from hydranet.metrics.base import NO_GROUND_TRUTH
from hydranet.metrics.detection2d import box_iou
from hydranet.metrics.frame_records import FrameMetric, as_numpy, require, safe_div


def greedy_match(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, thr: float) -> list[tuple[int, int]]:
    """(pred, gt) pairs: by descending score, each prediction takes the best free gt with IoU >= thr."""
    if len(boxes) == 0 or len(gt) == 0:
        return []
    iou = box_iou(boxes, gt)
    taken = np.zeros(len(gt), bool)
    pairs = []
    for i in np.argsort(-scores, kind="mergesort"):
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= thr:
            taken[j] = True
            pairs.append((int(i), j))
    return pairs


class TrafficLightMetric(FrameMetric):
    """``balanced_accuracy`` (headline), ``recall/<state>``, ``precision/<state>``, ``state_balanced_accuracy``,
    ``accuracy``, ``recall``, ``precision``, ``correct_recall``, ``lights/<state>``, ``confusion/<gt>/<pred>``,
    ``false/<state>`` (predictions of that state that matched no light: a light called where there is none).

    Predictions per frame: ``dict(boxes [K,4], scores [K], camera [K], state [K])``; targets: the
    ``traffic_light`` label.
    """

    def __init__(self, states: Sequence[str] = LIGHT_STATES, iou_threshold: float = 0.5) -> None:
        self.states = tuple(states)
        self.iou_threshold = float(iou_threshold)
        super().__init__()

    def frame_record(self, pred: Any, target: Any, where: str) -> np.ndarray:
        """Counts ``[S + 2, S]`` int64 for ``S`` states: the confusion of matched lights (rows ground truth),
        ground-truth lights per state, predictions per state; matched per camera by ``greedy_match``.
        Raises ``ValueError`` on missing keys, lengths that differ or a state out of range."""
        require(pred, ["boxes", "scores", "camera", "state"], f"{where} prediction")
        require(target, ["boxes", "camera", "state"], f"{where} target")
        pb, ps = as_numpy(pred["boxes"], np.float64).reshape(-1, 4), as_numpy(pred["scores"], np.float64).reshape(-1)
        pc, pst = as_numpy(pred["camera"], np.int64).reshape(-1), as_numpy(pred["state"], np.int64).reshape(-1)
        gb, gc = as_numpy(target["boxes"], np.float64).reshape(-1, 4), as_numpy(target["camera"], np.int64).reshape(-1)
        gst = as_numpy(target["state"], np.int64).reshape(-1)
        if not (len(pb) == len(ps) == len(pc) == len(pst)) or not (len(gb) == len(gc) == len(gst)):
            raise ValueError(f"{where}: boxes/scores/camera/state lengths differ")
        n_s = len(self.states)
        for name, st in (("prediction", pst), ("target", gst)):
            if len(st) and (st.min() < 0 or st.max() >= n_s):
                raise ValueError(f"{where} {name}: state index out of range [0, {n_s})")
        # record [n_s + 2, n_s]: confusion in rows :n_s, GT lights per state in row n_s, predictions per state in
        # row n_s + 1 (per-state precision counts unmatched predictions too).
        rec = np.zeros((n_s + 2, n_s), np.int64)
        for cam in np.union1d(pc, gc):
            pi, gi = np.flatnonzero(pc == cam), np.flatnonzero(gc == cam)
            for a, b in greedy_match(pb[pi], ps[pi], gb[gi], self.iou_threshold):
                rec[gst[gi[b]], pst[pi[a]]] += 1
        rec[n_s] = np.bincount(gst, minlength=n_s)
        rec[n_s + 1] = np.bincount(pst, minlength=n_s)
        return rec

    def _totals(self, frames: Sequence[int] | np.ndarray | None) -> np.ndarray:
        recs = self.records(frames)
        n_s = len(self.states)
        return np.sum(recs, axis=0) if recs else np.zeros((n_s + 2, n_s), np.int64)

    def confusion(self, frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Counts ``[states, states]`` of matched lights, rows = ground truth, columns = predicted."""
        return self._totals(frames)[:len(self.states)]

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """The keys of the class doc over ``frames``; NaN where undefined (e.g. a state with no light)."""
        n_s = len(self.states)
        tot = self._totals(frames)
        conf, gt_per_state, pred_per_state = tot[:n_s], tot[n_s], tot[n_s + 1]
        n_gt, n_pred = gt_per_state.sum(), pred_per_state.sum()
        matched, correct = conf.sum(), np.trace(conf)
        recall_s = safe_div(np.diag(conf), gt_per_state)  # NaN for a state with no light
        precision_s = safe_div(np.diag(conf), pred_per_state)  # NaN for a state never predicted
        state_recall = safe_div(np.diag(conf), conf.sum(axis=1))
        present = gt_per_state > 0
        out = {"balanced_accuracy": float(np.mean(recall_s[present])) if present.any() else float("nan")}
        for i, s in enumerate(self.states):
            out[f"recall/{s}"] = float(recall_s[i])
        for i, s in enumerate(self.states):
            out[f"precision/{s}"] = float(precision_s[i])
        seen = conf.sum(axis=1) > 0
        out["state_balanced_accuracy"] = float(np.mean(state_recall[seen])) if seen.any() else float("nan")
        out |= {"accuracy": float(safe_div(correct, matched)), "recall": float(safe_div(matched, n_gt)),
                "precision": float(safe_div(matched, n_pred)), "correct_recall": float(safe_div(correct, n_gt))}
        unmatched = pred_per_state - conf.sum(axis=0)  # predictions of each state that matched no light
        for i, g in enumerate(self.states):
            out[f"lights/{g}"] = float(gt_per_state[i])
            out[f"false/{g}"] = float(unmatched[i])
            for j, p in enumerate(self.states):
                out[f"confusion/{g}/{p}"] = float(conf[i, j])
        return out

    def undefined_reason(self, key: str) -> str:
        """``NO_GROUND_TRUTH`` for ``recall/<state>``/``precision/<state>`` when no light of that state was in the
        frames, and for the other rates when there was no light at all; else "no <state> light predicted"
        (``precision/<state>``) or "no light matched" (``accuracy``, ``state_balanced_accuracy``)."""
        gt = self._totals(None)[len(self.states)]
        name, _, state = key.partition("/")
        if state in self.states and name in ("recall", "precision"):
            if gt[self.states.index(state)] == 0:
                return NO_GROUND_TRUTH
            return f"no {state} light predicted" if name == "precision" else super().undefined_reason(key)
        if gt.sum() == 0:
            return NO_GROUND_TRUTH
        if key in ("accuracy", "state_balanced_accuracy"):
            return "no light matched"
        if key == "precision":
            return "no light predicted"
        return super().undefined_reason(key)
