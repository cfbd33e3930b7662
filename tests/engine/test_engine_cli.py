"""`hydranet label`, `hydranet autolabel-quality`, head-only vacation, and the short benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from engine_testkit import write_pipeline

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=400)


def invoke(*args: str):
    """The CLI in-process (no interpreter start-up per call)."""
    from typer.testing import CliRunner

    from hydranet.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_label_cli_oracle_and_auto(checkpoint, world_yaml, tmp_path):
    q = tmp_path / "q"
    r = invoke("mine", "--model", checkpoint, "--data", world_yaml, "-t", "condition:name=fog", "-b", "3", "-o", q,
               "--html-frames", "0")
    assert r.exit_code == 0, r.output
    for kind in ("oracle", "auto"):
        r = invoke("label", "-q", q, "--data", world_yaml, "-l", kind, "--teacher", checkpoint,
                   "--min-confidence", "0", "-o", tmp_path / kind)
        assert r.exit_code == 0, r.output
        recs = [json.loads(x) for x in (tmp_path / kind / "labels.jsonl").read_text().splitlines()]
        assert len(recs) == 3 and {x["provenance"]["labeller"] for x in recs} == {kind}
        assert (tmp_path / kind / "manifest.json").is_file()
        assert json.loads((tmp_path / kind / "manifest.json").read_text())["source"]["kind"] == "label"
    r = invoke("label", "-q", q, "--data", world_yaml, "-l", "auto", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "--teacher" in r.output
    r = invoke("label", "-q", tmp_path / "nope", "--data", world_yaml, "-o", tmp_path / "y")
    assert r.exit_code == 2 and "no queue" in r.output
    # A queue is replaced only with --overwrite, and only an earlier queue (before: any OUT was overwritten,
    # a labelled dataset or a training run included).
    before = (q / "queue.jsonl").read_text()
    args = ("mine", "--model", checkpoint, "--data", world_yaml, "-t", "condition:name=fog", "-b", "2", "--html-frames",
            "0", "-o")
    r = invoke(*args, q)
    assert r.exit_code == 2 and "pass --overwrite" in r.output and (q / "queue.jsonl").read_text() == before
    r = invoke(*args, tmp_path / "oracle", "--overwrite")
    assert r.exit_code == 2 and "holds no queue.jsonl" in " ".join(r.output.split())
    assert (tmp_path / "oracle" / "manifest.json").is_file()
    r = invoke(*args, q, "--overwrite")
    assert r.exit_code == 0, r.output
    assert len((q / "queue.jsonl").read_text().splitlines()) == 2


def test_autolabel_quality_cli(checkpoint, world_yaml, tmp_path):
    r = invoke("autolabel-quality", "--teacher", checkpoint, "--data", world_yaml, "--frames", "2", "--clip-radius",
               "2", "-o", tmp_path / "q.json")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "q.json").read_text())
    assert res["frames"] == 2 and "miou" in res["clip_smoothed"]["drivable"]
    # People get a table per task (before: the raw JSON), machines --json.
    assert not r.stdout.lstrip().startswith("{")
    drivable = r.stdout.split("ground truth: drivable")[1].split("auto labels vs ground truth")[0].splitlines()
    assert any("teacher's own" in line and "single frame" in line and "clip-smoothed" in line for line in drivable)
    miou = next(line for line in drivable if "miou" in line)
    assert f"{res['teacher']['drivable']['miou']:.4f}" in miou
    assert f"{res['single_frame']['drivable']['miou']:.4f}" in miou
    assert f"{res['clip_smoothed']['drivable']['miou']:.4f}" in miou
    assert "objects3d" in r.stdout and "confusion/" not in r.stdout  # per-state numbers stay in the JSON
    r = invoke("autolabel-quality", "--teacher", checkpoint, "--data", world_yaml, "--frames", "2", "--clip-radius",
               "2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == res


def test_vacation_head_only_from_the_feature_cache(tmp_path):
    pipe = write_pipeline(tmp_path / "p", iterations=1, tolerance=1.0, steps=2)
    tree = yaml.safe_load(pipe.read_text())
    tree["train"] = {"mode": "heads", "tasks": ["drivable"], "steps": 2}
    pipe.write_text(yaml.safe_dump(tree))
    r = run("-m", "hydranet", "vacation", "-c", str(pipe), "-o", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    it = tmp_path / "run" / "iter_001"
    assert (it / "cache" / "cache.json").is_file()
    from hydranet.checkpoint import load_checkpoint

    before = load_checkpoint(tmp_path / "p" / "start" / "step_00000000").model
    after = load_checkpoint(json.loads((it / "train.json").read_text())["checkpoint"]).model
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k in before if not before[k].equal(after[k])}
    assert changed == {"heads.drivable"}  # trunk, neck and the light head untouched


def test_benchmark_short_version(tmp_path):
    r = run(str(ROOT / "benchmarks" / "engine.py"), "--seeds", "0", "--work", str(tmp_path), "--base-frames", "10",
            "--pool-frames", "15", "--budget", "3", "--base-steps", "2", "--ft-steps", "2", "--teacher-frames", "5",
            "--teacher-steps", "2", "--eval-frames", "2", "--eval-seeds", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    weak = out["gain_vs_base"]["night/drivable.miou"]
    assert set(weak) == {"none", "random", "mined", "mined_uncertainty", "mined_auto"}
    seed = out["per_seed"][0]
    assert sum(seed["picked_lighting"]["random"].values()) == 3 == sum(seed["picked_lighting"]["mined"].values())
    assert seed["label_cost"]["mined_auto"]["total"] == 0 < seed["label_cost"]["mined"]["total"]
    assert isinstance(out["goal_met"], bool)
