"""Gate decision rule, its console table and worst-first ordering on hand-made runs (no model needed)."""

import io
import math

import torch
from rich.console import Console

from hydranet.cli.gate_table import print_gate
from hydranet.eval.gate import gate
from hydranet.eval.runner import FrameId, SuiteRun, TaskEval, worst_frames
from hydranet.eval.suite import Suite
from hydranet.metrics import DepthMetric, SegmentationIoU

SUITE = Suite(name="s", scenarios={"a": {}}, seeds=(0, 1), frames=8, bootstrap=300,
              tasks={"drivable": {"tolerance": {"miou": 0.05}}, "depth": {}})


def seg_run(hits: list[int], depth_scale: float = 1.0, with_depth: bool = True) -> SuiteRun:
    """8 frames; frame i predicts ``hits[i]`` of its 10 drivable pixels (of 20)."""
    seg, dep = SegmentationIoU(["drivable"], multilabel=True), DepthMetric()
    for h in hits:
        t = torch.zeros(1, 4, 5, dtype=torch.uint8)
        t.view(-1)[:10] = 1
        p = torch.zeros(1, 4, 5)
        p.view(-1)[:h] = 1.0
        seg.update([p], [t])
        d = torch.full((1, 4, 5), 10.0)
        dep.update([d * depth_scale], [d])
    frames = [FrameId("a", 0, i) for i in range(len(hits))]
    tasks = {"drivable": TaskEval("drivable", seg, list(range(len(hits))))}
    if with_depth:
        tasks["depth"] = TaskEval("depth", dep, list(range(len(hits))))
    for te in tasks.values():
        te.metrics = te.metric.compute()
    return SuiteRun(SUITE, frames, tasks, [] if with_depth else ["depth"])


def rows(a, b):
    return {(r.task, r.metric): r for r in gate(a, b)}


def test_identical_passes_with_zero_interval():
    r = rows(seg_run([10] * 8), seg_run([10] * 8))
    assert all(x.status == "pass" and x.delta == 0 and x.low == 0 == x.high for x in r.values())


def test_small_regression_within_tolerance_passes_large_fails():
    base = seg_run([10, 9, 10, 8, 10, 10, 9, 10])
    assert rows(base, seg_run([10, 9, 9, 8, 10, 10, 9, 10]))[("drivable", "miou")].status == "pass"
    bad = rows(base, seg_run([5, 4, 6, 5, 4, 5, 6, 5]))[("drivable", "miou")]
    assert bad.status == "fail" and bad.delta < -0.05 and bad.high < 0 and "tolerance" in bad.reason
    better = rows(base, seg_run([10] * 8))[("drivable", "miou")]
    assert better.status == "pass" and better.delta > 0


def test_drop_beyond_tolerance_within_noise_passes_marked_not_significant_and_the_table_says_so():
    # One frame of 8 loses its road: IoU 1.0 -> 0.875 (Δ -0.125, tolerance 0.05), but a third of the resamples
    # miss that frame (Δ = 0), so the interval holds 0: the rule passes it. Before, with reason '' and no mark.
    r = rows(seg_run([10] * 8), seg_run([10] * 7 + [0]))[("drivable", "miou")]
    assert r.status == "pass" and r.not_significant and r.frames == 8
    assert r.delta < -r.tolerance and r.low < 0 <= r.high
    assert r.reason.startswith("regressed by 0.125 > tolerance 0.05, but the 95% CI [")
    assert r.reason.endswith("holds 0: not significant at 8 frames")
    bad = rows(seg_run([10, 9, 10, 8, 10, 10, 9, 10]), seg_run([5, 4, 6, 5, 4, 5, 6, 5]))[("drivable", "miou")]
    assert bad.status == "fail" and not bad.not_significant  # significant: not a noise note
    same = rows(seg_run([10] * 8), seg_run([10] * 8))[("drivable", "miou")]
    assert same.reason == "" and not same.not_significant

    out = io.StringIO()
    print_gate(Console(file=out, width=10_000, no_color=True), "s", [r], frames=8, resamples=300, confidence=0.95,
               names=("current", "candidate"), more_frames="eval.frames")
    text = out.getvalue()
    assert "gate s — 8 frames, 300 bootstrap resamples, 95% CI (Δ > 0 = better)" in text
    assert "current" in text and "-0.1250" in text and f"{r.low:+.4f} .. +0.0000" in text and "0.0500" in text
    assert "pass regressed by 0.125 > tolerance 0.05, but the 95% CI" in text
    assert (f"s: 1 drop(s) beyond tolerance passed as not significant: drivable.miou Δ -0.125 (CI {r.low:+.3f}"
            "..+0.000, 8 frames). At this sample size such drops are within bootstrap noise; evaluate more frames "
            "(eval.frames) to decide them.") in " ".join(text.split())


def test_error_metric_orientation_and_default_tolerance():
    r = rows(seg_run([10] * 8), seg_run([10] * 8, depth_scale=1.2))
    assert r[("depth", "abs_rel")].status == "fail"  # abs_rel 0 -> 0.2: worse, beyond default 0.02
    assert r[("depth", "abs_rel")].delta < 0
    r = rows(seg_run([10] * 8, depth_scale=1.2), seg_run([10] * 8))
    assert r[("depth", "abs_rel")].status == "pass" and r[("depth", "abs_rel")].delta > 0


def test_missing_head_and_undefined_candidate_fail():
    r = rows(seg_run([10] * 8), seg_run([10] * 8, with_depth=False))
    assert r[("depth", "abs_rel")].status == "fail" and "no head" in r[("depth", "abs_rel")].reason
    r = rows(seg_run([10] * 8), seg_run([0] * 8))  # no predicted pixel: IoU 0, still defined
    assert r[("drivable", "miou")].status == "fail"
    nan = seg_run([10] * 8)
    nan.tasks["drivable"].metrics = {"miou": math.nan}
    assert rows(seg_run([10] * 8), nan)[("drivable", "miou")].status == "fail"


def test_worst_frames_order():
    run = seg_run([10, 2, 7, 10, 0, 10, 10, 10])
    worst = worst_frames(run, 3)
    # drivable badness 1 - IoU (0, 0.8, 0.3, ..., 1.0) averaged with depth (0 everywhere)
    assert [f for f, _ in worst] == [4, 1, 2]
    assert math.isclose(worst[0][1], 0.5) and math.isclose(worst[1][1], 0.4)
