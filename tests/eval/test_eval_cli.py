"""`hydranet eval` and `hydranet gate` end to end on a tiny trained checkpoint."""

import json
import re
import shutil

import pytest
import torch
from typer.testing import CliRunner

from hydranet.checkpoint import load_model, save_checkpoint
from hydranet.cli import app
from hydranet.eval.gate import gate
from hydranet.eval.runner import check_thresholds, run_suite
from hydranet.eval.suite import load_suite

runner = CliRunner()


def flat(output: str) -> str:
    """CLI output without rich's box drawing and line wrapping, for substring checks."""
    return " ".join(output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def damaged_copy(src, dst, head="drivable", mode="zero"):
    """A checkpoint like ``src`` whose ``head`` weights are zeroed (or replaced by noise), saved as a checkpoint
    of its own (editing the safetensors file in place is tampering: every load refuses it)."""
    model, ckpt = load_model(src)
    state = model.state_dict()
    # The head's learnt weights, not its BatchNorm running statistics (noise would make a variance negative).
    hit = [k for k, _ in model.named_parameters() if k.startswith(f"heads.{head}.")]
    assert hit, sorted(state)[:20]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k in hit:
            state[k].copy_(torch.zeros_like(state[k]) if mode == "zero" else torch.randn(state[k].shape, generator=g))
    return save_checkpoint(dst, model, {k: v for k, v in ckpt.state.items() if k not in ("format", "files_sha256")})


@pytest.mark.slow
def test_eval_passes_writes_json_and_fails_on_threshold(tiny_checkpoint, tiny_suite, tmp_path):
    out = tmp_path / "results.json"
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), "--suite", str(tiny_suite), "--out", str(out),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "drivable" in r.output
    data = json.loads(out.read_text())
    tiny = data["suites"][0]
    assert data["passed"] and tiny["frames"] == 6 and tiny["scenarios"] == ["straight", "night"]
    assert tiny["tasks"]["drivable"]["metrics"]["miou"] > 0.3
    assert set(tiny["tasks"]["drivable"]["per_scenario"]) == {"straight", "night"}
    assert tiny["tasks"]["depth"]["checks"][0]["status"] == "pass"
    for task in tiny["tasks"].values():  # every null metric says why
        assert {k for k, v in task["metrics"].items() if v is None} == set(task["undefined"])
    # a "—" cell (a metric undefined on the suite's or a scenario's frames) comes with the line that says so
    dash_cell = any(re.search(r"│\s*—\s*(│|$)", line) for line in r.output.splitlines())
    assert dash_cell == ("—: undefined on those frames" in flat(r.output))

    strict = tmp_path / "strict.yaml"
    strict.write_text(tiny_suite.read_text().replace('miou: ">= 0.30"', 'miou: ">= 0.999"'))
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), "--suite", str(strict), "--frames", "1", "--device", "cpu"])
    assert r.exit_code == 1 and "FAIL" in r.output


def test_eval_bad_inputs_exit_2(tiny_checkpoint, tiny_suite, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_suite.read_text().replace("abs_rel:", "abs_rell:"))
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), "--suite", str(bad), "--frames", "1", "--device", "cpu"])
    assert r.exit_code == 2 and "tasks.depth.thresholds.abs_rell: task 'depth' has no metric" in flat(r.output)
    r = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--suite", str(tiny_suite)])
    assert r.exit_code == 2 and "no such checkpoint" in flat(r.output)
    broken = tmp_path / "broken.yaml"
    broken.write_text("scenarios: {a: {fog: 3}}\nseeds: [0, 1]\nframes: 1\ntasks: {depth: {}}\n")
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), "--suite", str(broken)])
    assert r.exit_code == 2 and "broken.yaml" in flat(r.output) and "scenarios.a.fog" in flat(r.output)
    small = tmp_path / "small.yaml"
    small.write_text(tiny_suite.read_text().replace("lighting: day,", "lighting: day, setup: {image_size: [32, 128], "
                                                    "grid: {x_range: [-16, 16], y_range: [-16, 16], cell: 1.0}},"))
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), "--suite", str(small), "--frames", "1", "--device", "cpu"])
    assert r.exit_code == 2 and "images are 32x128 (HxW) but model 'model' is built for 64x128" in flat(r.output)
    cones = tmp_path / "cones.yaml"  # a threshold on a metric that never has a value, whatever the frames
    cones.write_text(tiny_suite.read_text().replace("objects3d: {}", 'objects3d: {thresholds: {ave/cone: "<= 4.0"}}'))
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), "--suite", str(cones), "--frames", "1", "--device", "cpu"])
    assert r.exit_code == 2
    assert "tasks.objects3d.thresholds.ave/cone: not scored for unoriented 'cone'" in flat(r.output)
    grid = tmp_path / "grid.yaml"
    grid.write_text(tiny_suite.read_text().replace("lighting: day,", "lighting: day, setup: {image_size: [64, 128], "
                                                   "grid: {cell: 0.5}},"))
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), "--suite", str(grid), "--frames", "1", "--device", "cpu"])
    assert r.exit_code == 2 and "BEV grid is" in flat(r.output) and "but model 'model' uses" in flat(r.output)


@pytest.mark.slow
def test_gate_catches_damaged_head_and_passes_identical_copy(tiny_checkpoint, tiny_suite, tmp_path):
    same = tmp_path / "same"
    shutil.copytree(tiny_checkpoint, same)
    out = tmp_path / "gate.json"
    r = runner.invoke(app, ["gate", "--baseline", str(tiny_checkpoint), "--candidate", str(same), "--suite",
                            str(tiny_suite), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert all(row["status"] != "fail" for row in rows)
    assert {row["task"] for row in rows} >= {"drivable", "depth", "detection2d"}
    assert all(row["delta"] in (0.0, None) for row in rows)

    damaged = damaged_copy(tiny_checkpoint, tmp_path / "damaged")
    r = runner.invoke(app, ["gate", "--baseline", str(tiny_checkpoint), "--candidate", str(damaged), "--suite",
                            str(tiny_suite), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 1, r.output
    rows = json.loads(out.read_text())["rows"]
    failed = {(row["task"], row["metric"]) for row in rows if row["status"] == "fail"}
    assert failed == {("drivable", "miou")}, rows  # only the damaged head regresses
    drv = next(row for row in rows if row["task"] == "drivable")
    assert drv["delta"] < -0.02 and drv["high"] < 0


@pytest.mark.slow
def test_runner_api_same_frames_and_noise_damage(tiny_checkpoint, tiny_suite, tmp_path):
    suite = load_suite(tiny_suite)
    base, _ = load_model(tiny_checkpoint)
    noisy, _ = load_model(damaged_copy(tiny_checkpoint, tmp_path / "noisy", head="depth", mode="noise"))
    runs = run_suite({"a": base, "b": noisy}, suite, frames=2)
    a, b = runs["a"], runs["b"]
    assert a.frames == b.frames and len(a.frames) == 4
    assert a.tasks["depth"].frames == b.tasks["depth"].frames
    assert [c.status for c in check_thresholds(a) if c.task == "drivable"] == ["pass"]
    rows = {(r.task, r.metric): r for r in gate(a, b)}
    assert rows[("depth", "abs_rel")].status == "fail"  # error metric: lower is better, oriented Δ < 0
    assert rows[("depth", "abs_rel")].delta < 0
    assert rows[("drivable", "miou")].status == "pass" and rows[("drivable", "miou")].delta == 0.0
    # a per-scenario number is the metric on that scenario's frames alone
    straight = [i for i, f in enumerate(a.tasks["drivable"].frames) if a.frames[f].scenario == "straight"]
    assert a.tasks["drivable"].per_scenario["straight"] == a.tasks["drivable"].metric.compute_frames(straight)
