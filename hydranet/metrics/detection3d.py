"""nuScenes-style 3D detection: centre-distance AP and true-positive errors.

Reproduces ``nuscenes.eval.detection.algo`` (``accumulate``, ``_calc_ap``, ``calc_tp``) on ego-frame
boxes ``(x, y, z, l, w, h, yaw)``:

- matching: per class, predictions in descending score; each takes the closest not-yet-taken
  ground truth of its frame by BEV centre distance, a match when distance < threshold
  (0.5, 1, 2, 4 m);
- AP: precision is interpolated (not enveloped) at 101 recall points; points with recall <= 0.1
  are dropped, precision is reduced by 0.1 and clipped at 0, normalised by 0.9 (nuScenes'
  ``min_recall = min_precision = 0.1``); mAP is the mean over classes and the four thresholds;
- TP errors at the 2 m threshold, averaged over recall 0.1 .. max recall as nuScenes does:
  ATE (BEV centre distance, m), ASE (1 - IoU of the size-aligned boxes), AOE (|yaw difference|,
  rad), AVE (|velocity difference|, m/s). Orientation and velocity are not scored for ``unoriented``
  classes (cones: the world's ``cone``, nuScenes' ``traffic_cone``), velocity not for ``static`` ones
  (``barrier``), as nuScenes' detection config: NaN. ``ate ase aoe ave`` (mATE..mAVE) are the NaN-skipping
  mean over classes, as nuScenes' ``DetectionMetrics.tp_errors``.

Deliberate differences, both "not measured" rather than a number:

- classes with no ground truth in the evaluated frames are NaN and left out of the means (nuScenes
  would give them AP 0), so a suite without cones is not penalised for having none;
- a class with ground truth but no match up to 10 % recall at 2 m (or whose matches all lack that
  error, e.g. predictions without velocity) has NaN TP errors, where nuScenes' ``calc_tp`` writes a
  1.0 placeholder. That 1.0 means "TP score 0" only inside NDS, which clips every error at 1; read as
  metres or m/s it is a *good* value, so "nothing matched" passed a suite threshold ``ave <= 4.0`` and
  looked better than a real 1.5 m/s to the gate. NaN fails such a check with the reason
  (``undefined_reason``: "no match"), and a class matched by nothing does not pull mATE.. towards 1.
  ``calc_tp(md, name)`` itself still returns nuScenes' value; the metric passes ``empty=nan``.

``max_range`` optionally drops boxes farther than that from the ego; ``class_ranges`` (class name -> metres,
e.g. ``NUSCENES_CLASS_RANGE``) does so per class, as nuScenes' ``class_range`` filter.
``region`` = ``((x_min, x_max), (y_min, y_max))`` (ego metres) keeps only
boxes whose centre lies in that rectangle (``(min, max]``, as the grid assigns cells), predictions
and ground truth alike: a BEV model can only place objects on its grid, and scoring objects outside
it caps mAP at the share it can hold.
``min_visible`` (0..1, optional) drops ground truth whose ``visible`` fraction (the label's best camera) is
below it, nuScenes' ``filter_eval_boxes`` rule for boxes without a single lidar or radar point: an
object no sensor sees in this frame cannot be detected from it (temporal recall of such objects is
``TemporalDetection3DMetric``'s ``occluded_recall``). Targets without ``visible`` are kept whole.
``range_bins`` (metres, ascending) additionally reports ``map@<lo>-<hi>m`` (last: ``map@<lo>m+``) per BEV-distance band,
each band matched on its own (predictions and ground truth filtered to the band, nuScenes' way of
scoring a class range).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from hydranet.metrics.base import NO_GROUND_TRUTH
from hydranet.metrics.frame_records import FrameMetric, as_numpy, nanmean, require

_DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD = 2.0
_TP_ERRORS = ("ate", "ase", "aoe", "ave")
_N_POINTS = 101
_MIN_RECALL = _MIN_PRECISION = 0.1
# nuScenes' detection config (``detection_cvpr_2019``): per-class maximum BEV distance from the ego, metres.
NUSCENES_CLASS_RANGE: dict[str, float] = {
    "car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction_vehicle": 50.0, "pedestrian": 40.0,
    "motorcycle": 40.0, "bicycle": 40.0, "traffic_cone": 30.0, "barrier": 30.0}


def _angle_diff(a: np.ndarray, b: np.ndarray, period: float = 2 * np.pi) -> np.ndarray:
    """Smallest absolute angle difference (nuScenes ``yaw_diff``), in [0, pi]."""
    d = (a - b + period / 2) % period - period / 2
    d = np.where(d > np.pi, d - 2 * np.pi, d)
    return np.abs(d)


def _scale_iou(size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """IoU of boxes with equal centre and heading: only the sizes ``[..., 3]`` matter."""
    inter = np.prod(np.minimum(size_a, size_b), axis=-1)
    return inter / (np.prod(size_a, axis=-1) + np.prod(size_b, axis=-1) - inter)


def _cummean(x: np.ndarray) -> np.ndarray:
    """NaN-aware running mean (nuScenes ``_cummean``): all-NaN -> ones."""
    if np.isnan(x).all():
        return np.ones(len(x))
    s = np.nancumsum(x.astype(np.float64))
    n = np.cumsum(~np.isnan(x))
    return np.divide(s, n, out=np.zeros_like(s), where=n != 0)


def accumulate(score: np.ndarray, order_key: np.ndarray, matched: np.ndarray, errors: np.ndarray,
               npos: int) -> dict[str, np.ndarray] | None:
    """Interpolated precision/confidence/errors at 101 recall points (``None`` = no match)."""
    if npos == 0 or not matched.any():
        return None
    order = np.lexsort((order_key, score))[::-1]  # descending score; ties: later index first (nuScenes)
    m, conf, err = matched[order], score[order], errors[order]
    tp = np.cumsum(m).astype(np.float64)
    fp = np.cumsum(~m).astype(np.float64)
    prec, rec = tp / (fp + tp), tp / float(npos)
    rec_i = np.linspace(0, 1, _N_POINTS)
    out = {"recall": rec_i, "precision": np.interp(rec_i, rec, prec, right=0),
           "confidence": np.interp(rec_i, rec, conf, right=0)}
    m_conf = conf[m]
    for j, name in enumerate(_TP_ERRORS):
        if np.isnan(err[m, j]).all():  # never measured (e.g. no velocity predicted): NaN, not cummean's ones
            out[name] = np.full(_N_POINTS, np.nan)
            continue
        tmp = _cummean(err[m, j])
        out[name] = np.interp(out["confidence"][::-1], m_conf[::-1], tmp[::-1])[::-1]
    return out


def _calc_ap(md: dict[str, np.ndarray] | None) -> float:
    """nuScenes ``_calc_ap``: mean precision above recall 0.1, minus 0.1, clipped at 0, normalised by 0.9;
    0 when ``md`` is ``None`` (no match)."""
    if md is None:
        return 0.0
    prec = np.copy(md["precision"])[round(100 * _MIN_RECALL) + 1:] - _MIN_PRECISION
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - _MIN_PRECISION)


def calc_tp(md: dict[str, np.ndarray] | None, name: str, empty: float = 1.0) -> float:
    """nuScenes ``calc_tp``: mean of TP error ``name`` from recall 0.1 to the highest recall reached; ``empty``
    (nuScenes: 1.0) when ``md`` is ``None`` or that range is empty; NaN when no match carried the error."""
    if md is None:
        return empty
    first = round(100 * _MIN_RECALL) + 1
    nz = np.nonzero(md["confidence"])[0]
    last = nz[-1] if len(nz) else 0
    if last < first:
        return empty
    return float(np.mean(md[name][first:last + 1]))


class Detection3DMetric(FrameMetric):
    """``map`` (headline), ``ap/<class>``, ``ap@<d>m``, ``ate ase aoe ave`` (+ ``/<class>``).

    Predictions per frame: ``dict(boxes [K,7], scores [K], classes [K], velocity [K,2] optional)``;
    targets: the ``objects3d`` label (``boxes, classes, velocity``).
    """

    def __init__(self, classes: Sequence[str], unoriented: Sequence[str] = ("cone", "traffic_cone"),
                 max_range: float | None = None, thresholds: Sequence[float] = _DIST_THRESHOLDS,
                 region: tuple[tuple[float, float], tuple[float, float]] | None = None,
                 range_bins: Sequence[float] = (), min_visible: float | None = None,
                 static: Sequence[str] = ("barrier",), class_ranges: dict[str, float] | None = None) -> None:
        self.classes = tuple(classes)
        if min_visible is not None and not 0.0 <= min_visible <= 1.0:
            raise ValueError(f"Detection3DMetric: min_visible {min_visible} must be in [0, 1]")
        self.min_visible = min_visible
        self.unoriented = {self.classes.index(c) for c in unoriented if c in self.classes}
        self.static = {self.classes.index(c) for c in static if c in self.classes} | self.unoriented
        self.max_range = max_range
        self.class_ranges = np.array([(class_ranges or {}).get(c, np.inf) for c in self.classes], dtype=np.float64)
        if region is not None:
            (x0, x1), (y0, y1) = region
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"Detection3DMetric: region {region} must be ((x_min, x_max), (y_min, y_max)) "
                                 "with min < max")
        self.region = region
        self.range_bins = tuple(float(b) for b in range_bins)
        bins = self.range_bins
        if any(b <= a for a, b in zip(bins[:-1], bins[1:], strict=True)) or any(b < 0 for b in bins):
            raise ValueError(f"Detection3DMetric: range_bins {self.range_bins} must be ascending and >= 0")
        self.thresholds = tuple(float(t) for t in thresholds)
        if TP_THRESHOLD not in self.thresholds:
            raise ValueError(f"Detection3DMetric: thresholds {self.thresholds} must include {TP_THRESHOLD} m")
        super().__init__()

    def _read(self, d: dict[str, Any], where: str, target: bool = False) -> tuple[np.ndarray, ...]:
        boxes = as_numpy(d["boxes"], np.float64).reshape(-1, 7)
        cls = as_numpy(d["classes"], np.int64).reshape(-1)
        vel = as_numpy(d["velocity"], np.float64).reshape(-1, 2) if "velocity" in d else np.full((len(boxes), 2),
                                                                                                  np.nan)
        if not (len(boxes) == len(cls) == len(vel)):
            raise ValueError(f"{where}: boxes/classes/velocity lengths differ ({len(boxes)}, {len(cls)}, {len(vel)})")
        if len(cls) and (cls.min() < 0 or cls.max() >= len(self.classes)):
            raise ValueError(f"{where}: class index out of range [0, {len(self.classes)})")
        keep = np.ones(len(boxes), bool)
        if self.max_range is not None:
            keep &= np.hypot(boxes[:, 0], boxes[:, 1]) <= self.max_range
        if np.isfinite(self.class_ranges).any():
            keep &= np.hypot(boxes[:, 0], boxes[:, 1]) <= self.class_ranges[cls]
        if self.region is not None:
            (x0, x1), (y0, y1) = self.region
            # (min, max], as ``BevGrid.metres_to_index`` + floor assigns cells (row 0 holds x = x_max).
            keep &= (boxes[:, 0] > x0) & (boxes[:, 0] <= x1) & (boxes[:, 1] > y0) & (boxes[:, 1] <= y1)
        if target and self.min_visible is not None and "visible" in d:
            visible = as_numpy(d["visible"], np.float64).reshape(-1)
            if len(visible) != len(boxes):
                raise ValueError(f"{where}: visible has {len(visible)} entries for {len(boxes)} boxes")
            keep &= visible >= self.min_visible
        return boxes[keep], cls[keep], vel[keep], keep

    def bands(self) -> list[tuple[float, float]]:
        """The ``(lo, hi)`` BEV-distance bands of ``range_bins`` (the last one open-ended)."""
        edges = list(self.range_bins)
        return [(lo, hi) for lo, hi in zip(edges, edges[1:] + [np.inf], strict=True)] if edges else []

    def frame_record(self, pred: Any, target: Any, where: str) -> dict[str, Any]:
        """nuScenes greedy matching of one frame (after the ``max_range``/``region`` filters) at every distance
        threshold: dict of ``cls``, ``score``, ``matched [K, T]``, TP ``errors [K, 4]`` and ``npos [classes]``,
        + one such dict per ``range_bins`` band under ``bands``. Raises ``ValueError`` on missing keys,
        lengths that differ or a class index out of range."""
        require(pred, ["boxes", "scores", "classes"], f"{where} prediction")
        require(target, ["boxes", "classes"], f"{where} target")
        p_box, p_cls, p_vel, keep = self._read(pred, f"{where} prediction")
        p_score = as_numpy(pred["scores"], np.float64).reshape(-1)[keep]
        g_box, g_cls, g_vel, _ = self._read(target, f"{where} target", target=True)
        record = self._match(p_box, p_cls, p_vel, p_score, g_box, g_cls, g_vel)
        if self.range_bins:
            p_r, g_r = np.hypot(p_box[:, 0], p_box[:, 1]), np.hypot(g_box[:, 0], g_box[:, 1])
            record["bands"] = []
            for lo, hi in self.bands():
                p, g = (p_r >= lo) & (p_r < hi), (g_r >= lo) & (g_r < hi)
                record["bands"].append(self._match(p_box[p], p_cls[p], p_vel[p], p_score[p], g_box[g], g_cls[g],
                                                   g_vel[g]))
        return record

    def _match(self, p_box: np.ndarray, p_cls: np.ndarray, p_vel: np.ndarray, p_score: np.ndarray,
               g_box: np.ndarray, g_cls: np.ndarray, g_vel: np.ndarray) -> dict[str, np.ndarray]:
        """nuScenes greedy matching of one frame's (already filtered) predictions to its ground truth."""
        n_t = len(self.thresholds)
        matched = np.zeros((len(p_box), n_t), bool)
        errors = np.full((len(p_box), len(_TP_ERRORS)), np.nan)
        order = np.lexsort((np.arange(len(p_score)), p_score))[::-1]
        dist = np.hypot(p_box[:, None, 0] - g_box[None, :, 0], p_box[:, None, 1] - g_box[None, :, 1])
        for ti, thr in enumerate(self.thresholds):
            taken = np.zeros(len(g_box), bool)
            for i in order:
                cand = (g_cls == p_cls[i]) & ~taken
                if not cand.any():
                    continue
                d = np.where(cand, dist[i], np.inf)
                j = int(np.argmin(d))  # first closest, as nuScenes' strict '<' scan
                if d[j] < thr:
                    taken[j] = True
                    matched[i, ti] = True
                    if thr == TP_THRESHOLD:
                        k = int(p_cls[i])
                        errors[i] = (d[j], 1 - _scale_iou(g_box[j, 3:6], p_box[i, 3:6]),
                                     _angle_diff(g_box[j, 6], p_box[i, 6]) if self._scored(k, "aoe") else np.nan,
                                     np.linalg.norm(p_vel[i] - g_vel[j]) if self._scored(k, "ave") else np.nan)
        npos = np.bincount(g_cls, minlength=len(self.classes))
        return {"cls": p_cls, "score": p_score, "matched": matched, "errors": errors, "npos": npos}

    def metric_data(self, frames: Sequence[int] | np.ndarray | None = None,
                    band: int | None = None) -> dict[tuple[int, float], Any]:
        """nuScenes ``DetectionMetricData`` per (class, threshold); ``None`` = no match/no GT.
        ``band``: the records of that ``range_bins`` band instead of the whole region."""
        recs = self.records(frames)
        if band is not None:
            recs = [r["bands"][band] for r in recs]
        if not recs:
            return {}
        cls = np.concatenate([r["cls"] for r in recs])
        score = np.concatenate([r["score"] for r in recs])
        matched = np.concatenate([r["matched"] for r in recs])
        errors = np.concatenate([r["errors"] for r in recs])
        npos = np.sum([r["npos"] for r in recs], axis=0)
        key = np.arange(len(score))
        out = {}
        for k in range(len(self.classes)):
            sel = cls == k
            for ti, thr in enumerate(self.thresholds):
                out[(k, thr)] = accumulate(score[sel], key[sel], matched[sel, ti], errors[sel], int(npos[k])) \
                    if npos[k] > 0 else "no_gt"
        return out

    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """``map``, ``ap@<d>m``, ``ate`` (m), ``ase``, ``aoe`` (rad), ``ave`` (m/s), per class ``ap/<class>`` and
        ``<error>/<class>``, and per band ``map@<lo>-<hi>m``; classes without ground truth are NaN and left
        out of the means."""
        ap, tp = self._ap_tp(self.metric_data(frames))
        out = {"map": nanmean(ap)}
        for ti, thr in enumerate(self.thresholds):
            out[f"ap@{thr:g}m"] = nanmean(ap[:, ti])
        for j, name in enumerate(_TP_ERRORS):
            out[name] = nanmean(tp[:, j])
        for k, cname in enumerate(self.classes):
            out[f"ap/{cname}"] = nanmean(ap[k]) if not np.isnan(ap[k]).all() else float("nan")
            for j, name in enumerate(_TP_ERRORS):
                out[f"{name}/{cname}"] = float(tp[k, j])
        for b, (lo, hi) in enumerate(self.bands()):
            band_ap, _ = self._ap_tp(self.metric_data(frames, band=b))
            out[f"map@{lo:g}m+" if np.isinf(hi) else f"map@{lo:g}-{hi:g}m"] = nanmean(band_ap)
        return out

    def _ap_tp(self, mds: dict[tuple[int, float], Any]) -> tuple[np.ndarray, np.ndarray]:
        """AP ``[classes, thresholds]`` and TP errors ``[classes, 4]`` (NaN for classes without GT)."""
        n_c = len(self.classes)
        ap = np.full((n_c, len(self.thresholds)), np.nan)
        tp = np.full((n_c, len(_TP_ERRORS)), np.nan)
        for k in range(n_c):
            if mds.get((k, TP_THRESHOLD), "no_gt") == "no_gt":
                continue
            for ti, thr in enumerate(self.thresholds):
                ap[k, ti] = _calc_ap(mds[(k, thr)])
            for j, name in enumerate(_TP_ERRORS):
                scored = self._scored(k, name)
                tp[k, j] = calc_tp(mds[(k, TP_THRESHOLD)], name, empty=np.nan) if scored else np.nan
        return ap, tp

    def _scored(self, k: int, error: str) -> bool:
        """Whether TP error ``error`` (``_TP_ERRORS``) is scored for class index ``k``: orientation not for an
        unoriented class, velocity not for a static one (unoriented classes are static too), as nuScenes' detection
        config (no orientation or velocity for cones, no velocity for barriers). The one rule for matches, per-class
        errors and ``unscored``."""
        if error == "aoe":
            return k not in self.unoriented
        if error == "ave":
            return k not in self.static
        return True

    def unscored(self, key: str) -> str | None:
        """Why ``<error>/<class>`` is never scored (``_scored``), or None."""
        name, _, sub = key.partition("/")
        if sub not in self.classes or self._scored(self.classes.index(sub), name):
            return None
        kind = "unoriented" if self.classes.index(sub) in self.unoriented else "static"
        return f"not scored for {kind} '{sub}' (as nuScenes)"

    def undefined_reason(self, key: str) -> str:
        """Why ``key`` is NaN over all frames: ``unscored`` when it never has a value, ``NO_GROUND_TRUTH`` (no
        object of the class / in the band / at all), "no velocity predicted", or "no match" (ground truth
        there, no prediction reached 10 % recall within 2 m)."""
        never = self.unscored(key)
        if never is not None:
            return never
        recs = self.records(None)
        if not recs:
            return NO_GROUND_TRUTH
        npos = np.sum([r["npos"] for r in recs], axis=0)
        name, _, sub = key.partition("/")
        if name.startswith("map@"):
            labels = [(f"map@{lo:g}m+" if np.isinf(hi) else f"map@{lo:g}-{hi:g}m") for lo, hi in self.bands()]
            if key in labels:
                band = labels.index(key)
                return NO_GROUND_TRUTH if sum(int(r["bands"][band]["npos"].sum()) for r in recs) == 0 else \
                    "no prediction in this band"
        classes = [self.classes.index(sub)] if sub in self.classes else list(range(len(self.classes)))
        if npos[classes].sum() == 0:
            return NO_GROUND_TRUTH
        if name not in _TP_ERRORS:
            return super().undefined_reason(key)
        ti = self.thresholds.index(TP_THRESHOLD)
        scored = [k for k in classes if k not in self.unoriented]
        matched = [r["errors"][r["matched"][:, ti] & np.isin(r["cls"], scored), 3] for r in recs]
        if name == "ave" and any(len(v) for v in matched) and all(np.isnan(v).all() for v in matched):
            return "no velocity predicted (no match carries one)"
        return "no match within 2 m up to 10 % recall"

    def pr_curves(self, threshold: float = TP_THRESHOLD) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Interpolated (recall, precision) per class with ground truth, at one distance threshold."""
        out = {}
        for (k, thr), md in self.metric_data(None).items():
            if thr != threshold or md == "no_gt":
                continue
            rec = np.linspace(0, 1, _N_POINTS)
            out[self.classes[k]] = (rec, np.zeros(_N_POINTS) if md is None else md["precision"])
        return out
