"""A metric that is NaN is judged by one rule in `hydranet eval`, `hydranet gate` and the report: skipped when
the frames hold no ground truth for it (``recall/red`` without a red light), a failure with its reason when the
model's result is undefined (``ave`` when nothing matched). Hand-made runs, no model."""

import math

import numpy as np
import torch

from hydranet.eval.gate import gate
from hydranet.eval.report import build_report
from hydranet.eval.runner import FrameId, SuiteRun, TaskEval, check_thresholds
from hydranet.eval.suite import Suite
from hydranet.metrics import Detection3DMetric, TrafficLightMetric

STATES = ("red", "yellow", "green")


def light_frame(states: list[int], found: bool = True):
    """One camera, lights side by side; a perfect detector (right state) when ``found``, else no prediction."""
    boxes = torch.tensor([[10.0 + 30 * i, 10.0, 30.0 + 30 * i, 40.0] for i in range(len(states))]).reshape(-1, 4)
    n = len(states) if found else 0
    target = {"boxes": boxes, "camera": torch.zeros(len(states), dtype=torch.long), "state": torch.tensor(states)}
    pred = {"boxes": boxes[:n], "scores": torch.ones(n), "camera": torch.zeros(n, dtype=torch.long),
            "state": torch.tensor(states[:n], dtype=torch.long)}
    return pred, target


def light_run(suite: Suite, frames: list[tuple[list[int], bool]]) -> SuiteRun:
    m = TrafficLightMetric(STATES)
    for states, found in frames:
        m.update(*map(lambda x: [x], light_frame(states, found)))
    te = TaskEval("traffic_light", m, list(range(len(frames))))
    te.metrics = m.compute()
    return SuiteRun(suite, [FrameId("a", 0, i) for i in range(len(frames))], {"traffic_light": te}, [])


LIGHTS = Suite(name="lights", scenarios={"a": {}}, seeds=(0, 1), frames=4, bootstrap=50,
               tasks={"traffic_light": {"thresholds": {"recall/red": ">= 0.3", "recall": ">= 0.3"},
                                        "tolerance": {"recall/red": 0.1, "recall": 0.1}}})


def test_red_recall_without_red_lights_is_skipped_in_eval_gate_and_report():
    run = light_run(LIGHTS, [([2, 2], True), ([1], True)])  # green and yellow only
    assert math.isnan(run.tasks["traffic_light"].metrics["recall/red"])
    checks = {c.metric: c for c in check_thresholds(run)}
    assert checks["recall/red"].status == "skipped"  # before: "fail" (NaN never passes)
    assert checks["recall/red"].reason == "no ground truth on these frames"
    assert checks["recall"].status == "pass"
    rows = {r.metric: r for r in gate(run, light_run(LIGHTS, [([2, 2], True), ([1], True)]))}
    assert rows["recall/red"].status == "skipped" and rows["recall/red"].reason == checks["recall/red"].reason
    html = build_report(None, [run], [list(checks.values())], samples=0)
    assert "no ground truth on these frames" in html and "FAIL" not in html


def test_a_task_with_nothing_judged_fails_in_eval_and_gate():
    """Frames without a single light leave every light check without ground truth: before, `eval` and `gate`
    said PASS (and the vacation promoted a candidate whose light head was destroyed)."""
    from hydranet.eval.runner import NOT_JUDGED

    run = light_run(LIGHTS, [([], True), ([], True)])
    checks = check_thresholds(run)
    assert {c.status for c in checks} == {"fail"} and all(c.reason == NOT_JUDGED for c in checks)
    rows = gate(run, light_run(LIGHTS, [([], True), ([], True)]))
    assert {r.status for r in rows} == {"fail"} and all(r.reason == NOT_JUDGED for r in rows)


def test_missed_red_light_still_fails():
    run = light_run(LIGHTS, [([0, 2], False), ([2], True)])  # a red light, not found: recall/red 0, defined
    checks = {c.metric: c for c in check_thresholds(run)}
    assert checks["recall/red"].status == "fail" and checks["recall/red"].value == 0.0


def test_light_head_that_predicts_nothing_on_red_free_frames_is_undefined_not_skipped_for_precision():
    m = TrafficLightMetric(STATES)
    m.update(*map(lambda x: [x], light_frame([2], found=False)))
    assert m.undefined_reason("recall/red") == "no ground truth"
    assert m.undefined_reason("precision/green") == "no green light predicted"
    assert m.undefined_reason("accuracy") == "no light matched"


OBJECTS = Suite(name="objects", scenarios={"a": {}}, seeds=(0, 1), frames=4, bootstrap=50,
                tasks={"objects3d": {"thresholds": {"ave": "<= 4.0"}, "tolerance": {"ave": 0.2}}})


def objects_run(shift: float, speed_error: float) -> SuiteRun:
    """4 frames of 3 well-separated cars moving at 5 m/s; predictions ``shift`` m off, velocity off by
    ``speed_error`` m/s."""
    m = Detection3DMetric(("car", "truck", "pedestrian", "cone"))
    for _ in range(4):
        g = torch.tensor([[10.0 * i, 0.0, 0.5, 4.0, 2.0, 1.5, 0.0] for i in range(3)], dtype=torch.float64)
        v = torch.tensor([[5.0, 0.0]] * 3, dtype=torch.float64)
        p = g.clone()
        p[:, 0] += shift
        m.update([{"boxes": p, "scores": torch.tensor([0.9, 0.8, 0.7]), "classes": torch.zeros(3, dtype=torch.long),
                   "velocity": v + torch.tensor([speed_error, 0.0], dtype=torch.float64)}],
                 [{"boxes": g, "classes": torch.zeros(3, dtype=torch.long), "velocity": v}])
    te = TaskEval("objects3d", m, list(range(4)))
    te.metrics = m.compute()
    return SuiteRun(OBJECTS, [FrameId("a", 0, i) for i in range(4)], {"objects3d": te}, [])


def test_nothing_matched_fails_the_ave_threshold_and_the_gate():
    matched, nothing = objects_run(0.0, 1.5), objects_run(6.0, 0.0)
    assert matched.tasks["objects3d"].metrics["ave"] == np.float64(1.5)
    assert math.isnan(nothing.tasks["objects3d"].metrics["ave"])  # before: 1.0 m/s
    check = check_thresholds(nothing)[0]
    assert check.status == "fail" and "no match" in check.reason  # before: pass (1.0 <= 4.0)
    assert check_thresholds(matched)[0].status == "pass"
    row = {r.metric: r for r in gate(matched, nothing)}["ave"]
    assert row.status == "fail" and "no match" in row.reason  # before: pass, "improved" from 1.5 to 1.0 m/s
    both = {r.metric: r for r in gate(nothing, nothing)}["ave"]
    assert both.status == "skipped" and "both models" in both.reason
