"""Regression gate: candidate vs baseline, task by task, with paired frame-bootstrap intervals.

Both checkpoints are evaluated on the same frames, so a task's metrics have records aligned frame
by frame. For each gated metric the change Δ = candidate − baseline is oriented so that positive
means better (negated for error metrics such as ``abs_rel``). Its confidence interval comes from a
paired bootstrap: resample the frames with replacement (the same resample for both models),
recompute the metric from the per-frame records, take percentiles of Δ.

A metric **fails** when the regression is both larger than its tolerance and significant:
``Δ < −tolerance`` and the interval's upper end ``< 0``. It also fails when the baseline measured
it and the candidate cannot (NaN, e.g. a light head that detects nothing). A task the candidate
lacks but the baseline has fails; identical models always pass (Δ = 0 in every resample).
A metric without ground truth on the suite's frames (``recall/red`` with no red light) is
**skipped**, as ``hydranet eval`` skips its threshold (``runner.judge_undefined``).

A drop beyond the tolerance whose interval still holds 0 passes — on few frames it cannot be told
from noise — but not silently: its row is marked ``not_significant`` and its reason says so, with the
interval and the number of frames it was resampled from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hydranet.eval.runner import NO_HEAD, SuiteRun, fail_unjudged, judge_undefined
from hydranet.eval.suite import SuiteError, lower_is_better


@dataclass
class GateRow:
    """One gated metric of one task: baseline and candidate values, the oriented change ``delta``
    (> 0 is better), its bootstrap confidence interval [``low``, ``high``], the allowed regression
    ``tolerance``, and ``status`` ``pass``/``fail``/``skipped`` with a reason. ``frames``: the frames whose
    records the interval was resampled from (the task's labelled frames); ``not_significant``: a pass whose drop
    exceeds the tolerance while the interval holds 0 (not significant at ``frames`` frames)."""

    suite: str
    task: str
    metric: str
    baseline: float
    candidate: float
    delta: float  # oriented: > 0 is better
    low: float
    high: float
    tolerance: float
    status: str  # "pass" | "fail" | "skipped"
    reason: str = ""
    frames: int = 0
    not_significant: bool = False


def _bootstrap_delta(base: SuiteRun, cand: SuiteRun, task: str, metrics: list[str], resamples: int,
                    confidence: float, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile interval of the oriented Δ of each metric under a paired frame bootstrap."""
    ta, tb = base.tasks[task], cand.tasks[task]
    if ta.frames != tb.frames:
        raise RuntimeError(f"task '{task}': baseline and candidate were evaluated on different frames")
    n = ta.metric.num_frames
    if n == 0:
        return {m: (math.nan, math.nan) for m in metrics}
    rng = np.random.default_rng(seed)
    deltas = np.full((resamples, len(metrics)), np.nan)
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        ra, rb = ta.metric.compute_frames(idx, keys=metrics), tb.metric.compute_frames(idx, keys=metrics)
        for j, m in enumerate(metrics):
            sign = -1.0 if lower_is_better(m) else 1.0
            deltas[b, j] = sign * (rb[m] - ra[m]) + 0.0
    alpha = (1 - confidence) / 2
    out = {}
    for j, m in enumerate(metrics):
        col = deltas[:, j][~np.isnan(deltas[:, j])]
        out[m] = (float(np.quantile(col, alpha)), float(np.quantile(col, 1 - alpha))) if len(col) else (
            math.nan, math.nan)
    return out


def gate(base: SuiteRun, cand: SuiteRun, seed: int = 0) -> list[GateRow]:
    """One row per gated (task, metric) of the suite; a task none of whose rows could be judged for want of ground
    truth fails (``runner.fail_unjudged``)."""
    suite = base.suite
    rows = []
    for task in suite.tasks:
        if task in base.skipped:
            rows.append(GateRow(suite.name, task, "-", math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                                "skipped", f"baseline: {NO_HEAD}"))
            continue
        headline = base.tasks[task].headline
        tols = suite.tolerances(task, headline)
        bad = [m for m, t in tols.items() if not (math.isfinite(t) and t >= 0)]
        if bad:  # NaN compares false both ways: it would pass any regression
            raise SuiteError(f"{suite.path}: tasks.{task}.tolerance.{bad[0]}: {tols[bad[0]]} is not a finite "
                             "number >= 0")
        frames = base.tasks[task].metric.num_frames
        if task in cand.skipped:
            rows += [GateRow(suite.name, task, m, base.tasks[task].metrics.get(m, math.nan), math.nan, math.nan,
                             math.nan, math.nan, t, "fail", f"candidate: {NO_HEAD}", frames)
                     for m, t in tols.items()]
            continue
        missing = [m for m in tols if m not in base.tasks[task].metrics]
        if missing:
            raise SuiteError(f"{suite.path}: tasks.{task}.tolerance.{missing[0]}: task '{task}' has no metric "
                             f"'{missing[0]}'; available: {sorted(base.tasks[task].metrics)}")
        ci = _bootstrap_delta(base, cand, task, list(tols), suite.bootstrap, suite.confidence, seed)
        for m, tol in tols.items():
            a, b = base.tasks[task].metrics[m], cand.tasks[task].metrics[m]
            sign = -1.0 if lower_is_better(m) else 1.0
            delta = sign * (b - a) + 0.0  # + 0.0: no "-0" for error metrics
            low, high = ci[m]
            base_status, base_why = judge_undefined(base.tasks[task], m) if math.isnan(a) else ("", "")
            not_significant = False
            if base_status == "skipped":  # no ground truth: the same frames, so for both models
                status, reason = "skipped", base_why
            elif math.isnan(a) and math.isnan(b):
                status, reason = "skipped", f"undefined for both models ({base_why.removeprefix('undefined: ')})"
            elif math.isnan(b):
                status, reason = "fail", ("candidate result is undefined where the baseline's is not ("
                                          f"{judge_undefined(cand.tasks[task], m)[1].removeprefix('undefined: ')})")
            elif math.isnan(a):
                status, reason = "pass", f"baseline result {base_why}"
            elif delta < -tol and high < 0:
                status, reason = "fail", f"regressed by {-delta:.4g} > tolerance {tol:g} (CI upper end {high:.3g} < 0)"
            elif delta < -tol:  # the rule above passes it; the row says why
                not_significant = True
                status, reason = "pass", (f"regressed by {-delta:.4g} > tolerance {tol:g}, but the "
                                          f"{suite.confidence:.0%} CI [{low:+.3f}, {high:+.3f}] holds 0: not "
                                          f"significant at {frames} frames")
            else:
                status, reason = "pass", ""
            rows.append(GateRow(suite.name, task, m, a, b, delta, low, high, tol, status, reason, frames,
                                not_significant))
    return fail_unjudged(rows)
