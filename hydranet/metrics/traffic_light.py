"""Traffic-light state: accuracy and confusion on matched lights, plus detection recall/precision.

Matching rule: per camera, predicted lights in descending score each take the not-yet-matched
ground-truth light with the highest IoU, a match when IoU >= ``iou_threshold`` (0.5); the state
is ignored for matching. On matched pairs, ``accuracy`` = fraction with the right state and
``confusion/<gt>/<pred>`` counts them (rows ground truth). ``recall`` = matched / ground-truth
lights, ``precision`` = matched / predicted lights, ``correct_recall`` = ground-truth lights found
*with* the right state / all ground-truth lights (the end-to-end number: a missed light is wrong).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from hydranet.data.sample import LIGHT_STATES
from hydranet.metrics.detection2d import box_iou
from hydranet.metrics.frames import FrameMetric, as_numpy, require, safe_div


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
    """``accuracy`` (headline), ``recall``, ``precision``, ``correct_recall``, ``confusion/<gt>/<pred>``.

    Predictions per frame: ``dict(boxes [K,4], scores [K], camera [K], state [K])``; targets: the
    ``traffic_light`` label.
    """

    def __init__(self, states: Sequence[str] = LIGHT_STATES, iou_threshold: float = 0.5) -> None:
        self.states = tuple(states)
        self.iou_threshold = float(iou_threshold)
        super().__init__()

    def frame_record(self, pred: Any, target: Any, where: str) -> np.ndarray:
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
        # record: [n_s + 1, n_s + 1]; confusion in [:n_s, :n_s], GT count in [n_s, 0], pred count in [n_s, 1]
        rec = np.zeros((n_s + 1, n_s + 1), np.int64)
        for cam in np.union1d(pc, gc):
            pi, gi = np.flatnonzero(pc == cam), np.flatnonzero(gc == cam)
            for a, b in greedy_match(pb[pi], ps[pi], gb[gi], self.iou_threshold):
                rec[gst[gi[b]], pst[pi[a]]] += 1
        rec[n_s, 0], rec[n_s, 1] = len(gb), len(pb)
        return rec

    def confusion(self, frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Counts ``[states, states]`` of matched lights, rows = ground truth, columns = predicted."""
        recs = self.records(frames)
        n_s = len(self.states)
        return (np.sum(recs, axis=0) if recs else np.zeros((n_s + 1, n_s + 1), np.int64))[:n_s, :n_s]

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        recs = self.records(frames)
        n_s = len(self.states)
        tot = np.sum(recs, axis=0) if recs else np.zeros((n_s + 1, n_s + 1), np.int64)
        conf, n_gt, n_pred = tot[:n_s, :n_s], tot[n_s, 0], tot[n_s, 1]
        matched, correct = conf.sum(), np.trace(conf)
        out = {"accuracy": float(safe_div(correct, matched)), "recall": float(safe_div(matched, n_gt)),
               "precision": float(safe_div(matched, n_pred)), "correct_recall": float(safe_div(correct, n_gt))}
        for i, g in enumerate(self.states):
            for j, p in enumerate(self.states):
                out[f"confusion/{g}/{p}"] = float(conf[i, j])
        return out
