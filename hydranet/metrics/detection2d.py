"""COCO-style 2D detection AP, per class and per camera.

Each (frame, camera) pair is one COCO "image". Matching and accumulation reproduce pycocotools'
``COCOeval`` (bbox, area range "all", maxDets 100) exactly — ``tests/metrics`` cross-checks the
numbers against pycocotools to 1e-6 — but the matching is done once per frame and kept as a small
record, so AP on any subset or bootstrap resample of frames is a cheap re-accumulation.

Matching rule (COCO): per image and class, detections in descending score (stable), each takes
the unmatched ground truth with the highest IoU >= threshold (ties: the later one); ground truth
marked *ignore* (``visible < min_visible``) is only taken when no regular one matches, and a
detection matched to it counts neither as TP nor FP. Precision is made monotone (envelope) and read
at 101 recall points; AP@[.5:.95] averages IoU thresholds 0.50:0.05:0.95; classes without ground
truth are left out of the mean (as COCO does).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from hydranet.metrics.base import NO_GROUND_TRUTH
from hydranet.metrics.frame_records import FrameMetric, as_numpy, nanmean, require

_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU ``[D, G]`` of x1y1x2y2 boxes; for crowd ground truth the union is the detection's area."""
    dt = dt.astype(np.float64).reshape(-1, 4)
    gt = gt.astype(np.float64).reshape(-1, 4)
    iw = np.minimum(dt[:, None, 2], gt[None, :, 2]) - np.maximum(dt[:, None, 0], gt[None, :, 0])
    ih = np.minimum(dt[:, None, 3], gt[None, :, 3]) - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_d = (dt[:, 2] - dt[:, 0]) * (dt[:, 3] - dt[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    union = area_d[:, None] + area_g[None, :] - inter
    if crowd is not None and crowd.any():
        union = np.where(crowd[None, :], area_d[:, None], union)
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _match_image(dt_boxes: np.ndarray, dt_scores: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
                thresholds: np.ndarray = _IOU_THRESHOLDS, max_dets: int = 100,
                gt_crowd: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO greedy matching of one image and class.

    Returns ``order`` (indices of the kept detections, by descending score), ``matched [T, D]`` and
    ``ignored [T, D]`` (the detection's match is an ignored ground truth).
    """
    order = np.argsort(-dt_scores, kind="mergesort")[:max_dets]
    g_order = np.argsort(gt_ignore, kind="mergesort")  # regular ground truth first
    ig = gt_ignore[g_order].astype(bool)
    crowd = np.zeros(len(g_order), bool) if gt_crowd is None else gt_crowd[g_order].astype(bool)
    ious = box_iou(dt_boxes[order], gt_boxes[g_order], crowd)
    n_t, n_d, n_g = len(thresholds), len(order), len(g_order)
    matched = np.zeros((n_t, n_d), bool)
    ignored = np.zeros((n_t, n_d), bool)
    if n_g == 0:
        return order, matched, ignored
    for ti, thr in enumerate(thresholds):
        taken = np.zeros(n_g, bool)
        thr = min(thr, 1 - 1e-10)
        for di in range(n_d):
            free = ~taken | crowd
            ok = free & (ious[di] >= thr)
            m = -1
            for segment in (~ig, ig):  # regular ground truth first, ignored only if none matched
                cand = ok & segment
                if cand.any():
                    best = ious[di][cand].max()
                    m = int(np.flatnonzero(cand & (ious[di] == best))[-1])
                    break
            if m < 0:
                continue
            matched[ti, di] = True
            ignored[ti, di] = ig[m]
            taken[m] = True
    return order, matched, ignored


def accumulate(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, npos: int) -> np.ndarray:
    """COCO precision ``[T, 101]`` at the recall points (``-1`` rows when there is no ground truth)."""
    n_t = matched.shape[0]
    if npos == 0:
        return -np.ones((n_t, len(_RECALL_POINTS)))
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    tps = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fps = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    precision = np.zeros((n_t, len(_RECALL_POINTS)))
    for t in range(n_t):
        tp, fp = tps[t], fps[t]
        if len(tp) == 0:
            continue
        rc = tp / npos
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope
        idx = np.searchsorted(rc, _RECALL_POINTS, side="left")
        valid = idx < len(pr)
        precision[t, valid] = pr[idx[valid]]
    return precision


class Detection2DMetric(FrameMetric):
    """COCO AP@[.5:.95] (headline ``map``), ``ap50``, ``ap75``, ``ap/<class>``, ``ap/<camera>``.

    Predictions per frame: ``dict(boxes [K,4] x1y1x2y2 px, scores [K], classes [K], camera [K])``.
    Targets: the ``detection2d`` label (``boxes, classes, camera``, optional ``visible``).
    ``class_key`` names the class field (``"state"`` reuses this metric for traffic lights).
    """

    def __init__(self, classes: Sequence[str], num_cameras: int | None = None,
                 camera_names: Sequence[str] | None = None, max_dets: int = 100, min_visible: float = 0.0,
                 class_key: str = "classes") -> None:
        self.classes = tuple(classes)
        if num_cameras is None and camera_names is not None:
            num_cameras = len(camera_names)
        # None: cameras are discovered from the data (per-camera AP for every index seen)
        self.num_cameras = None if num_cameras is None else int(num_cameras)
        self.camera_names = None if camera_names is None else tuple(camera_names)
        if self.camera_names is not None and len(self.camera_names) != self.num_cameras:
            raise ValueError(f"Detection2DMetric: {len(self.camera_names)} camera names for {num_cameras} cameras")
        self.max_dets = int(max_dets)
        self.min_visible = float(min_visible)
        self.class_key = class_key
        super().__init__()

    def frame_record(self, pred: Any, target: Any, where: str) -> dict[str, np.ndarray]:
        """COCO matching of one frame, per (camera, class) image: dict of the detections' ``cls``, ``cam``,
        ``score`` and ``matched``/``ignored`` flags ``[T=10, K]``, and ground-truth counts
        ``npos [cameras, classes]``. Raises ``ValueError`` on missing keys, lengths that differ, or
        class/camera indices out of range."""
        require(pred, ["boxes", "scores", self.class_key, "camera"], f"{where} prediction")
        require(target, ["boxes", self.class_key, "camera"], f"{where} target")
        p_boxes = as_numpy(pred["boxes"], np.float64).reshape(-1, 4)
        p_scores = as_numpy(pred["scores"], np.float64).reshape(-1)
        p_cls = as_numpy(pred[self.class_key], np.int64).reshape(-1)
        p_cam = as_numpy(pred["camera"], np.int64).reshape(-1)
        g_boxes = as_numpy(target["boxes"], np.float64).reshape(-1, 4)
        g_cls = as_numpy(target[self.class_key], np.int64).reshape(-1)
        g_cam = as_numpy(target["camera"], np.int64).reshape(-1)
        if not (len(p_boxes) == len(p_scores) == len(p_cls) == len(p_cam)):
            raise ValueError(f"{where} prediction: boxes/scores/{self.class_key}/camera lengths differ "
                             f"({len(p_boxes)}, {len(p_scores)}, {len(p_cls)}, {len(p_cam)})")
        if not (len(g_boxes) == len(g_cls) == len(g_cam)):
            raise ValueError(f"{where} target: boxes/{self.class_key}/camera lengths differ")
        n_c = len(self.classes)
        all_cam = np.concatenate([p_cam, g_cam])
        n_cam = self.num_cameras if self.num_cameras is not None else int(all_cam.max(initial=0)) + 1
        for name, arr, bound in (("class", np.concatenate([p_cls, g_cls]), n_c), ("camera", all_cam, n_cam)):
            if len(arr) and (arr.min() < 0 or arr.max() >= bound):
                raise ValueError(f"{where}: {name} index out of range [0, {bound}): {sorted(set(arr.tolist()))}")
        g_ig = np.zeros(len(g_boxes), bool)
        if self.min_visible > 0 and "visible" in target:
            g_ig = as_numpy(target["visible"], np.float64).reshape(-1) < self.min_visible
        n_t = len(_IOU_THRESHOLDS)
        cls, cam, score, matched, ignored = [], [], [], [], []
        npos = np.zeros((n_cam, n_c), np.int64)
        for c_idx in range(n_cam):  # image order, as COCO concatenates images
            for k in range(n_c):
                dsel = np.flatnonzero((p_cam == c_idx) & (p_cls == k))
                gsel = np.flatnonzero((g_cam == c_idx) & (g_cls == k))
                npos[c_idx, k] = int((~g_ig[gsel]).sum())
                if len(dsel) == 0:
                    continue
                order, m, ig = _match_image(p_boxes[dsel], p_scores[dsel], g_boxes[gsel], g_ig[gsel],
                                           _IOU_THRESHOLDS, self.max_dets)
                cls.append(np.full(len(order), k))
                cam.append(np.full(len(order), c_idx))
                score.append(p_scores[dsel][order])
                matched.append(m)
                ignored.append(ig)
        if not cls:
            return {"cls": np.zeros(0, np.int64), "cam": np.zeros(0, np.int64), "score": np.zeros(0),
                    "matched": np.zeros((n_t, 0), bool), "ignored": np.zeros((n_t, 0), bool), "npos": npos}
        return {"cls": np.concatenate(cls), "cam": np.concatenate(cam), "score": np.concatenate(score),
                "matched": np.concatenate(matched, 1), "ignored": np.concatenate(ignored, 1), "npos": npos}

    @staticmethod
    def _npos(recs: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Ground-truth counts ``[cameras, classes]`` summed over records (padded when cameras are
        discovered from the data)."""
        n_cam = max(r["npos"].shape[0] for r in recs)
        out = np.zeros((n_cam, recs[0]["npos"].shape[1]), np.int64)
        for r in recs:
            out[: r["npos"].shape[0]] += r["npos"]
        return out

    def cameras(self, frames: Sequence[int] | np.ndarray | None = None) -> tuple[str, ...]:
        """Camera names for the per-camera keys (``cam<i>`` unless names were given)."""
        if self.camera_names is not None:
            return self.camera_names
        recs = self.records(frames)
        n_cam = self.num_cameras or (max(r["npos"].shape[0] for r in recs) if recs else 0)
        return tuple(f"cam{i}" for i in range(n_cam))

    def precision(self, frames: Sequence[int] | np.ndarray | None = None, camera: int | None = None) -> np.ndarray:
        """COCO precision ``[T, 101, classes]`` (``-1`` for classes without ground truth)."""
        recs = self.records(frames)
        n_t, n_c = len(_IOU_THRESHOLDS), len(self.classes)
        out = -np.ones((n_t, len(_RECALL_POINTS), n_c))
        if not recs:
            return out
        cls = np.concatenate([r["cls"] for r in recs])
        cam = np.concatenate([r["cam"] for r in recs])
        score = np.concatenate([r["score"] for r in recs])
        matched = np.concatenate([r["matched"] for r in recs], 1)
        ignored = np.concatenate([r["ignored"] for r in recs], 1)
        npos = self._npos(recs)  # [cams, classes]
        for k in range(n_c):
            sel = cls == k
            n = int(npos[:, k].sum())
            if camera is not None:
                sel &= cam == camera
                n = int(npos[camera, k]) if camera < len(npos) else 0
            out[:, :, k] = accumulate(score[sel], matched[:, sel], ignored[:, sel], n)
        return out

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """``map`` (AP@[.5:.95]), ``ap50``, ``ap75``, ``ap/<class>`` and ``ap/<camera>`` (per-camera AP only
        when ``keys`` is ``None`` or asks for it)."""
        prec = self.precision(frames)
        has_gt = prec[0, 0, :] > -1
        per_class = np.where(has_gt, prec.mean(axis=(0, 1)), np.nan)
        out = {
            "map": nanmean(per_class),
            "ap50": nanmean(np.where(has_gt, prec[0].mean(0), np.nan)),
            "ap75": nanmean(np.where(has_gt, prec[5].mean(0), np.nan)),
        }
        out.update({f"ap/{name}": float(v) for name, v in zip(self.classes, per_class, strict=True)})
        for c_idx, cname in enumerate(self.cameras(frames)):
            if keys is not None and f"ap/{cname}" not in keys:
                continue  # per-camera AP re-accumulates every class: skip it when nobody asked
            p = self.precision(frames, camera=c_idx)
            gt = p[0, 0, :] > -1
            out[f"ap/{cname}"] = nanmean(np.where(gt, p.mean(axis=(0, 1)), np.nan))
        return out

    def undefined_reason(self, key: str) -> str:
        """Always ``NO_GROUND_TRUTH``: an AP is NaN only without ground truth (of the class, in the camera)."""
        return NO_GROUND_TRUTH

    def pr_curves(self, iou: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Interpolated (recall, precision) per class with ground truth, at one IoU threshold."""
        t = int(np.argmin(np.abs(_IOU_THRESHOLDS - iou)))
        prec = self.precision(None)
        return {name: (_RECALL_POINTS.copy(), prec[t, :, k]) for k, name in enumerate(self.classes)
                if prec[t, 0, k] > -1}
