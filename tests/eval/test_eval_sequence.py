"""Suites with ``sequence:``: every planned frame ends a clip streamed in order through each model, and the
objects3d / traffic-light metrics gain mAVE's companions occlusion persistence and flicker."""

import json

import pytest
import torch
from typer.testing import CliRunner

from hydranet.cli import app, suites
from hydranet.eval import Evaluator, TrackerOptions
from hydranet.eval.runner import check_thresholds, plan_frames, run_suite
from hydranet.eval.suite import load_suite
from hydranet.model import ModelConfig, create_model

GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 1.0}

SUITE = """
description: stop-and-go video
world: {num_scenes: 2, frames_per_scene: 6, lighting: day, fog: 0.0, layout: straight, ego_stop_and_go: true,
        traffic_density: 2.0}
scenarios:
  stop_and_go: {}
seeds: [700, 701]
frames: 2
sequence: 3
tasks:
  objects3d:
    thresholds: {ave: "<= 100.0", flicker: "<= 1.0"}
  traffic_light: {}
"""


def model(temporal: bool):
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": (64, 128), "grid": GRID}, trunk={"name": "regnet_tiny"},
                             fusion={"temporal": temporal},
                             tasks={"objects3d": {"score_threshold": 0.0}, "traffic_light": {}})
    return create_model(cfg).eval()


def test_sequence_suite_streams_clips_and_reports_temporal_metrics(tmp_path):
    path = tmp_path / "video.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    plan = plan_frames(suite, lambda s, seed: 12, scene_len=lambda s, seed: 6)
    assert [f.index for f in plan] == [0, 1, 2, 9, 10, 11]  # clips ending at frames 0 -> shifted, and 11
    runs = run_suite({"single": model(False), "temporal": model(True)}, suite)
    for run in runs.values():
        metrics = run.tasks["objects3d"].metrics
        assert {"map", "ave", "occluded_recall", "flicker", "visible_recall"} <= set(metrics)
        assert len(run.tasks["objects3d"].frames) == 6
        assert "flicker" in run.tasks["traffic_light"].metrics
        assert {c.metric: c.status for c in check_thresholds(run)}["ave"] == "pass"
        # the gate's bootstrap works on the per-frame records
        assert "flicker" in run.tasks["objects3d"].metric.compute_frames([0, 1, 2])
    # `hydranet eval` prints what the sequence adds, threshold or not, beside the headline
    with suites.console.capture() as captured:
        suites._print_eval(runs["temporal"], check_thresholds(runs["temporal"]))
    for metric in ("map", "ave", "occluded_recall", "visible_recall", "flicker"):
        assert metric in captured.get(), metric


def test_video_suites_score_tracked_velocity(tmp_path):
    # --track without score smoothing: the boxes and scores stay the model's (same mAP), the velocity becomes the
    # tracks' (another mAVE). Scores that follow the tracks are tests/eval/test_eval_tracking.py's.
    path = tmp_path / "video.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    net = model(False)
    plain = run_suite({"m": net}, suite)["m"].tasks["objects3d"]
    tracked = run_suite({"m": net}, suite, tracking=TrackerOptions(score_smoothing=0.0))["m"].tasks["objects3d"]
    assert plain.metrics["map"] == tracked.metrics["map"]
    assert plain.metrics["ave"] != tracked.metrics["ave"]
    with pytest.raises(ValueError, match="stream"):
        Evaluator(net, stream=False, tracking=TrackerOptions())


def test_eval_track_says_what_it_tracked(tmp_path):
    (tmp_path / "video.yaml").write_text(SUITE)
    out = tmp_path / "e.json"
    res = CliRunner().invoke(app, ["eval", "zoo:tiny-world", "--suite", str(tmp_path / "video.yaml"), "--track", "-o",
                                   str(out)])
    assert res.exit_code in (0, 1), res.output
    assert "--track: objects3d boxes tracked over each clip of video" in " ".join(res.output.split())
    record = json.loads(out.read_text())
    assert record["tracking"]["suites"] == ["video"] and record["tracking"]["options"]["gate_m"] > 0


def test_gate_and_report_track_as_eval_does(tmp_path):
    """Before: only eval and infer had --track, so gate and report showed a video suite's untracked numbers."""
    # objects3d alone: the suite's few frames hold no traffic light, and a light task with nothing judged fails
    (tmp_path / "video.yaml").write_text(SUITE.replace("  traffic_light: {}\n", ""))
    out = tmp_path / "g.json"
    res = CliRunner().invoke(app, ["gate", "--baseline", "zoo:tiny-world", "--candidate", "zoo:tiny-world", "--suite",
                                   str(tmp_path / "video.yaml"), "--track", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "--track: objects3d boxes tracked over each clip of video" in " ".join(res.output.split())
    assert json.loads(out.read_text())["tracking"]["gate_m"] > 0
    res = CliRunner().invoke(app, ["report", "zoo:tiny-world", "--suite", str(tmp_path / "video.yaml"), "--track",
                                   "--samples", "0", "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 1000, res.output


def test_report_draws_a_video_suites_frame_with_the_memory_it_was_scored_with(tmp_path, monkeypatch):
    """Before: the report's sample frames were predicted from the reset state, though a video suite scores every
    frame after the frames before it in its clip: the picture was not the prediction the metrics ranked."""
    import numpy as np

    from hydranet.eval import report
    from hydranet.eval.runner import Worlds

    path = tmp_path / "video.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    net = model(True)
    torch.nn.init.normal_(net.fusion.temporal.out.weight, std=0.2)  # untrained, the memory adds nothing
    run = run_suite({"m": net}, suite)["m"]
    worlds = Worlds(suite, {"m": net})
    last = 2  # the third frame of the first clip: two frames of memory
    assert [len(report._sequence_before(worlds, run, k, worlds.sample(run.frames[k]))) for k in range(4)] == \
        [0, 1, 2, 0]  # a new clip starts the memory again
    seen: list = []  # what render_frame draws: every decoded output and target passes through report._cpu
    cpu = report._cpu
    monkeypatch.setattr(report, "_cpu", lambda x: seen.append(x) or cpu(x))

    def drawn_scores() -> np.ndarray:
        seen.clear()
        report.render_frame(net, worlds, run, last, "cpu")
        return np.asarray(next(x for x in seen if isinstance(x, dict) and "scores" in x and "velocity" in x)["scores"])

    streamed = drawn_scores()
    monkeypatch.setattr(report, "_sequence_before", lambda *args: [])
    reset = drawn_scores()
    assert streamed.shape != reset.shape or not np.array_equal(streamed, reset)
