"""Operation Vacation: a full run, the gate stopping promotion, and kill -9 + resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from engine_testkit import write_pipeline

from hydranet.cli.engine import _print_gate_record
from hydranet.engine.pipeline import PipelineError, load_pipeline
from hydranet.engine.records import STAGES, read_current
from hydranet.engine.stages import RUNNERS
from hydranet.engine.vacation import Vacation
from hydranet.eval import GateRow

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def vacation(*args: str):
    """``hydranet vacation`` in-process (the kill -9 test runs it as a real subprocess)."""
    from typer.testing import CliRunner

    from hydranet.cli import app

    r = CliRunner().invoke(app, ["vacation", *[str(a) for a in args]])
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.output)


def plain(text: str) -> str:
    """Console text without the tables' box-drawing lines, on one line: the words and numbers as they read."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def records(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): p.read_text() for p in sorted(run.glob("iter_*/*.json"))
            if p.stem in STAGES}


def test_two_iterations_promote_and_write_history(tmp_path):
    pipe = write_pipeline(tmp_path / "p", iterations=2, tolerance=1.0)
    r = vacation("-c", str(pipe), "-o", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    hist = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in hist] == [1, 2] and all(h["complete"] and h["promoted"] for h in hist)
    assert hist[1]["added_frames_total"] == 4 and hist[0]["label_cost"]["total"] > 2
    for h in hist:  # each stage's time, from its record; the iteration's is their sum
        stage_s = {s: json.loads((run / f"iter_{h['iteration']:03d}" / f"{s}.json").read_text())["seconds"]
                   for s in STAGES}
        assert h["stage_seconds"] == stage_s and h["seconds"] == round(sum(stage_s.values()), 2)
    stored = json.loads((run / "current.json").read_text())  # relative to the run: resumable from anywhere
    assert stored["checkpoint"].startswith("iter_002/train/") and stored["onnx"] == "iter_002/export/model.onnx"
    current = read_current(run)
    assert current["iteration"] == 2 and Path(current["onnx"]).is_file()
    assert current["checkpoint"].startswith(str(run / "iter_002" / "train"))
    q1 = {json.loads(x)["index"] for x in (run / "iter_001/queue/queue.jsonl").read_text().splitlines()}
    q2 = {json.loads(x)["index"] for x in (run / "iter_002/queue/queue.jsonl").read_text().splitlines()}
    assert len(q1) == len(q2) == 2 and not q1 & q2  # nothing is labelled twice
    mined = json.loads((run / "iter_001" / "mine.json").read_text())
    assert "top reasons: [" in mined["summary"] and "(x" in mined["summary"]  # each leading reason once, counted
    settings = json.loads((run / "iter_001/queue/mine_summary.json").read_text())["settings"]
    assert settings["oversample"] >= 1 and "max_per_scene" in settings
    manifest = json.loads((run / "iter_002/dataset_manifest.json").read_text())
    assert [s["path"] for s in manifest["shards"]] == [str(run / "iter_001/labels"), str(run / "iter_002/labels")]
    page = (run / "history.html").read_text()
    assert "iteration 2" in page and page.count("data:image/png;base64,") == 3  # chart + 2 mined pictures
    # gate.json: the gate's own rows (those of the eval record), per suite, with what the interval came from
    ev, gate = (json.loads((run / f"iter_002/{s}.json").read_text()) for s in ("eval", "gate"))
    night = gate["suites"]["tiny_night"]
    assert night["rows"] == ev["gate_rows"] and {k: night[k] for k in ("frames", "resamples", "confidence")} == {
        "frames": 2, "resamples": 20, "confidence": 0.95}
    row = night["rows"][0]
    assert (row["task"], row["metric"], row["tolerance"], row["status"], row["frames"]) == ("drivable", "miou", 1.0,
                                                                                          "pass", 2)
    assert row["delta"] == pytest.approx(row["candidate"] - row["baseline"]) and row["low"] <= row["high"]
    assert gate["candidate"] == json.loads((run / "iter_002/train.json").read_text())["checkpoint"]
    assert gate["current"].startswith(str(run / "iter_001" / "train"))  # the model iteration 1 promoted
    out = plain(r.stderr)
    assert out.count("gate tiny_night — 2 frames, 20 bootstrap resamples, 95% CI (Δ > 0 = better)") == 2
    assert "task metric current candidate Δ CI tolerance result" in out and "drivable miou" in out
    assert f"current model: promoted in iteration 2: checkpoint {current['checkpoint']} · ONNX" in out
    assert "{'checkpoint'" not in out
    before = records(run)
    again = vacation("-c", str(pipe), "-o", str(run))  # finished: re-running redoes nothing
    assert again.returncode == 0 and records(run) == before


def test_failing_gate_stops_promotion_and_names_suite_and_metric(tmp_path):
    # The candidate's drivable threshold is set where the start model's "all road" output never reaches it:
    # its night drivable IoU drops to 0, deterministically.
    pipe = write_pipeline(tmp_path / "p", iterations=1, tolerance=0.05, steps=2,
                          overrides=("model.tasks.drivable.threshold=0.999999",))
    r = vacation("-c", str(pipe), "-o", str(tmp_path / "run"))
    run = tmp_path / "run"
    gate = json.loads((run / "iter_001/gate.json").read_text())
    assert r.returncode == 1 and not gate["passed"], r.stderr
    assert gate["failures"][0]["suite"] == "tiny_night" and gate["failures"][0]["metric"] == "miou"
    out = plain(r.stderr)
    assert "suite tiny_night: drivable.miou" in out
    assert "drivable miou" in out and "FAIL regressed by" in out  # the table's row, as `hydranet gate` prints it
    assert "current model: the starting model: checkpoint" in out
    assert not (run / "current.json").exists()
    assert json.loads((run / "iter_001/export.json").read_text())["onnx"] is None
    assert json.loads((run / "iter_001/promote.json").read_text())["promoted"] is False


def test_gate_record_and_console_show_a_drop_within_noise(tmp_path, capsys):
    """The trial's case: night recall/red 1.0 -> 0.667 beyond tolerance 0.1, passed as the interval holds 0.
    gate.json keeps the row with its interval and mark; the console prints the table and the noise line."""
    rows = [asdict(GateRow("night", "traffic_light", "recall/red", 1.0, 2 / 3, -1 / 3, -0.5, 0.0, 0.1, "pass",
                           "regressed by 0.3333 > tolerance 0.1, but the 90% CI [-0.500, +0.000] holds 0: not "
                           "significant at 24 frames", 24, True)),
            asdict(GateRow("night", "drivable", "miou", 0.84, 0.96, 0.12, 0.06, 0.2, 0.02, "pass", "", 24))]
    recs = {"eval": {"gate_rows": rows, "gate_suites": {"night": {"frames": 24, "resamples": 200,
                                                                  "confidence": 0.9}}},
            "train": {"checkpoint": "cand"}}
    v = SimpleNamespace(record=lambda it, stage: recs[stage], current=lambda: {"checkpoint": "cur"})
    rec = RUNNERS["gate"](v, 1)
    assert rec["passed"] and rec["failures"] == [] and rec["not_significant"] == ["night/traffic_light.recall/red"]
    assert (rec["current"], rec["candidate"]) == ("cur", "cand")
    assert rec["suites"] == {"night": {"frames": 24, "resamples": 200, "confidence": 0.9, "rows": rows}}
    assert rec["summary"] == ("passed; 1 drop(s) beyond tolerance not significant at these frames "
                              "(night/traffic_light.recall/red)")
    _print_gate_record(1, "gate", json.loads(json.dumps(rec)))  # as read back from gate.json
    out = plain(capsys.readouterr().err)
    assert "gate night — 24 frames, 200 bootstrap resamples, 90% CI (Δ > 0 = better)" in out
    assert ("traffic_light recall/red 1.0000 0.6667 -0.3333 -0.5000 .. +0.0000 0.1000 pass regressed by 0.3333 > "
            "tolerance 0.1, but the 90% CI [-0.500, +0.000] holds 0: not significant at 24 frames") in out
    assert "drivable miou 0.8400 0.9600 +0.1200 +0.0600 .. +0.2000 0.0200 pass" in out
    assert ("night: 1 drop(s) beyond tolerance passed as not significant: traffic_light.recall/red Δ -0.333 "
            "(CI -0.500..+0.000, 24 frames). At this sample size such drops are within bootstrap noise; evaluate "
            "more frames (eval.frames in the pipeline) to decide them.") in out


def test_kill_9_then_resume_finishes_without_redoing_finished_stages(tmp_path):
    pipe = write_pipeline(tmp_path / "p", iterations=1, tolerance=1.0, steps=8)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hydranet", "vacation", "-c", str(pipe), "-o", str(run)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpts = run / "iter_001" / "train" / "checkpoints"
    while time.time() < deadline and not (ckpts / "latest.json").exists() and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of training (after its first checkpoint)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = records(run)
    assert "iter_001/mine.json" in done and "iter_001/train.json" not in done
    r = subprocess.run([sys.executable, "-m", "hydranet", "vacation", "-c", str(pipe), "-o", str(run)],
                       capture_output=True, text=True, env=ENV, timeout=400)
    assert r.returncode == 0, r.stderr
    assert "finished in an earlier run (kept, not redone)" in " ".join(r.stdout.split() + r.stderr.split())
    after = records(run)
    assert all(after[k] == v for k, v in done.items())  # finished stages untouched
    second = {json.loads(after[k])["pid"] for k in after if k not in done}
    assert len(second) == 1 and second != {json.loads(done["iter_001/mine.json"])["pid"]}
    train = json.loads(after["iter_001/train.json"])
    assert train["resumed"] is True  # training continued from its checkpoint, not from scratch


def test_pipeline_errors_name_the_field(tmp_path):
    pipe = write_pipeline(tmp_path / "p", iterations=1)
    tree = yaml.safe_load(pipe.read_text())
    tree["label"] = {"kind": "auto"}
    bad = tmp_path / "p" / "bad.yaml"
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(PipelineError, match="label.teacher"):
        load_pipeline(bad)
    tree["label"] = {"kind": "human"}
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(PipelineError, match="label.kind: .*'oracle' or 'auto'"):
        load_pipeline(bad)
    r = vacation("-c", str(bad), "-o", str(tmp_path / "run"))
    assert r.returncode == 2 and "label.kind" in r.stderr


def test_resuming_with_another_pipeline_is_refused(tmp_path):
    pipe = write_pipeline(tmp_path / "p", iterations=1)
    original = pipe.read_text()
    Vacation(load_pipeline(pipe), tmp_path / "run")
    (tmp_path / "run" / "iter_001").mkdir()
    (tmp_path / "run" / "iter_001" / "mine.json").write_text("{}")  # a finished stage: must not be mixed
    tree = yaml.safe_load(original)
    tree["mine"]["budget"] = 3
    pipe.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match=r"different pipeline \(fields \['mine'\]"):
        Vacation(load_pipeline(pipe), tmp_path / "run")
    # A field no finished stage has read may change: a suite fixed after mining, before any eval ran (before:
    # refused, and the run had to start over).
    tree = yaml.safe_load(original)
    tree["eval"]["frames"] = tree["eval"].get("frames", 2) + 1
    pipe.write_text(yaml.safe_dump(tree))
    logged: list[str] = []
    Vacation(load_pipeline(pipe), tmp_path / "run", log=logged.append)
    assert any("changed before any stage that reads them finished" in line for line in logged)


def test_an_exhausted_pool_stops_the_run_before_training(tmp_path, monkeypatch):
    """Before: an iteration whose mine stage queued nothing still fine-tuned on the base frames, gated and could
    promote a model no new frame had taught."""
    pipe = load_pipeline(write_pipeline(tmp_path / "p", iterations=2, tolerance=1.0))
    ran: list[tuple[int, str]] = []

    def fake(stage: str):
        def run(v, it):
            ran.append((it, stage))
            return {"picked": 0, "frames": 40, "summary": "0 of 40 frames queued"} if stage == "mine" else {}
        return run

    monkeypatch.setattr("hydranet.engine.stages.RUNNERS", {s: fake(s) for s in STAGES})
    logged: list[str] = []
    loop = Vacation(pipe, tmp_path / "run", log=logged.append)
    rows = loop.run()
    assert ran == [(1, "mine")] and len(rows) == 1 and not rows[0]["complete"]
    assert any("the pool is exhausted" in line for line in logged)
    assert Vacation(pipe, tmp_path / "run", log=logged.append).run() == rows and ran == [(1, "mine")]  # resumed
