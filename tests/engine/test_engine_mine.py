"""Mining: top-k against brute force, near-duplicate removal, trigger failures, CLI, torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hydranet.engine.mine import build_triggers, mine, rank_block
from hydranet.engine.pool import load_mining_model, model_tasks, open_pool
from hydranet.engine.select import k_centre
from hydranet.engine.triggers import Score, Trigger, parse_trigger_specs, register_trigger
from hydranet.engine.triggers.base import TRIGGERS

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None, module: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = module or [sys.executable, "-m", "hydranet"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def invoke(*args: str):
    """The CLI in-process (no interpreter start-up per call)."""
    from typer.testing import CliRunner

    from hydranet.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_k_centre_skips_near_duplicates():
    rng = np.random.default_rng(0)
    a = rng.normal(size=8)
    b = rng.normal(size=8)
    emb = np.stack([a, a + 1e-3, a + 2e-3, b])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sel = k_centre(np.array([1.0, 0.99, 0.98, 0.5]), emb, 2, radius=0.5)
    assert sel.order == [0, 3]  # the two copies of frame 0 lose to a distinct, lower-scored frame
    assert k_centre(np.array([1.0, 0.99, 0.98, 0.5]), emb, 2, radius=0.0).order == [0, 1]  # no dedup: by score
    with pytest.raises(ValueError, match="finite"):
        k_centre(np.array([np.nan, 1.0, 1.0, 1.0]), emb, 2)


def test_k_centre_caps_picks_per_group():
    """Scene a's frames outscore everything; at most two of them are picked, then the other scenes' best."""
    emb = np.eye(6)
    scores = np.array([1.0, 0.99, 0.98, 0.97, 0.2, 0.1])
    groups = np.array(["a", "a", "a", "a", "b", "c"])
    assert k_centre(scores, emb, 4, radius=0.0).order == [0, 1, 2, 3]
    assert k_centre(scores, emb, 4, radius=0.0, groups=groups, max_per_group=2).order == [0, 1, 4, 5]
    assert k_centre(scores, emb, 6, radius=0.0, groups=groups, max_per_group=1).order == [0, 4, 5]  # groups ran out
    with pytest.raises(ValueError, match="one group id per candidate"):
        k_centre(scores, emb, 2, max_per_group=1)
    with pytest.raises(ValueError, match=">= 1"):
        k_centre(scores, emb, 2, groups=groups, max_per_group=0)


def test_rank_blocks_cover_the_pool_once():
    blocks = [rank_block(10, r, 3) for r in range(3)]
    assert sorted(i for b in blocks for i in b) == list(range(10))


def test_mine_keeps_the_true_top_frames(checkpoint, world_yaml):
    """budget 3, oversample 1, no dedup: the queue is exactly the 3 best frames of a brute-force scoring."""
    model = load_mining_model(checkpoint)
    pool = open_pool(str(world_yaml))
    trigs = build_triggers(parse_trigger_specs("condition:name=fog,entropy:task=bev_semantic"), model_tasks(model))
    everything = mine(model, pool, trigs, len(pool), oversample=1, radius=0.0)
    best = sorted(everything.queue, key=lambda r: (-r["score"], r["index"]))[:3]
    top = mine(model, pool, trigs, 3, oversample=1, radius=0.0, batch_size=3)
    assert [r["index"] for r in top.queue] == [r["index"] for r in best]
    assert top.frames == len(pool)
    excluded = mine(model, pool, trigs, 3, oversample=1, radius=0.0, exclude={r["index"] for r in best})
    assert not {r["index"] for r in excluded.queue} & {r["index"] for r in best}


def test_mine_max_per_scene(checkpoint, world_yaml):
    """The cap holds on a real pool (5 frames per scene), and the queue keeps the best frame of each scene."""
    model = load_mining_model(checkpoint)
    pool = open_pool(str(world_yaml))
    trigs = build_triggers(parse_trigger_specs("entropy:task=bev_semantic"), model_tasks(model))
    best: dict[str, int] = {}
    for r in mine(model, pool, trigs, len(pool), oversample=1, radius=0.0).queue:
        best.setdefault(r["scene_id"], r["index"])  # the queue is in score order: a scene's first is its best
    capped = mine(model, pool, trigs, 6, oversample=3, radius=0.0, max_per_scene=1)
    # 6 asked, one per scene: the queue holds each scene's best frame once, and stops when the scenes run out.
    assert sorted(r["index"] for r in capped.queue) == sorted(best.values())
    two = mine(model, pool, trigs, 6, oversample=3, radius=0.0, max_per_scene=2)
    assert len(two.queue) == 6 and max(Counter(r["scene_id"] for r in two.queue).values()) == 2
    with pytest.raises(ValueError, match="max_per_scene"):
        mine(model, pool, trigs, 6, max_per_scene=0)


def test_a_raising_trigger_is_counted_and_the_frame_kept(checkpoint, world_yaml):
    @register_trigger
    class Fragile(Trigger):
        name = "test_fragile"

        def score(self, frame):
            if frame.frame_index == 2:
                raise RuntimeError("cannot score frame 2")
            return Score(0.1, "fine")

    try:
        model = load_mining_model(checkpoint)
        pool = open_pool(str(world_yaml))
        trigs = build_triggers(parse_trigger_specs("test_fragile,condition:name=night"), model_tasks(model))
        res = mine(model, pool, trigs, len(pool), oversample=1, radius=0.0)
    finally:
        TRIGGERS.pop("test_fragile")
    scenes = len({r["scene_id"] for r in res.queue})
    assert res.frames == len(pool) and len(res.queue) == len(pool)
    assert res.errors == {"test_fragile": scenes, "condition/night": 0}
    failed = [r for r in res.queue if r["scores"]["test_fragile"] is None]
    assert len(failed) == scenes and all(r["frame_index"] == 2 for r in failed)
    assert all("test_fragile failed: RuntimeError: cannot score frame 2" in r["reason"] for r in failed)
    assert "cannot score frame 2" in res.error_messages[0]


def test_mine_cli_writes_queue_page_and_summary(checkpoint, world_yaml, tmp_path):
    out = tmp_path / "q"
    r = invoke("mine", "--model", checkpoint, "--data", world_yaml, "-t",
               "entropy:task=drivable,light_margin,projection,drivable_consistency,depth_box,flicker,rare,"
               "condition:name=night*2", "-b", "4", "-o", out)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (out / "queue.jsonl").read_text().splitlines()]
    assert [x["rank"] for x in rows] == [1, 2, 3, 4]
    assert set(rows[0]["scores"]) == {"entropy/drivable", "light_margin", "projection", "drivable_consistency",
                                      "depth_box", "flicker", "rare", "condition/night"}
    assert all(x["reason"] for x in rows)
    summary = json.loads((out / "mine_summary.json").read_text())
    assert summary["frames"] == 15 and sum(summary["trigger_errors"].values()) == 0
    page = (out / "queue.html").read_text()
    assert page.count("<img src='data:image/jpeg;base64,") == 4 and rows[0]["frame_id"] in page
    settings = summary["settings"]
    assert settings["triggers"].startswith("entropy:task=drivable,") and settings["oversample"] == 4
    capped = invoke("mine", "--model", checkpoint, "--data", world_yaml, "-t", "entropy:task=drivable", "-b", "5",
                    "--max-per-scene", "1", "-o", tmp_path / "capped")
    assert capped.exit_code == 0, capped.output
    scenes = [json.loads(x)["scene_id"] for x in (tmp_path / "capped" / "queue.jsonl").read_text().splitlines()]
    assert len(scenes) == len(set(scenes)) == 3  # the pool's three scenes, one frame each: 3 of the 5 asked
    text = " ".join(capped.output.split())
    assert "queued 3 (fewer than the budget of 5: at most 1 per scene" in text
    assert "at most 1 per scene" in (tmp_path / "capped" / "queue.html").read_text()


@pytest.mark.parametrize("args,needle", [
    (["-t", "nope"], "--triggers: unknown trigger 'nope'"),
    (["-t", "flicker", "--model", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["-t", "shadow"], "--shadow"),
    (["-t", "flicker", "--max-per-scene", "0"], "--max-per-scene"),
])
def test_mine_cli_bad_input_exits_2(checkpoint, world_yaml, tmp_path, args, needle):
    base = ["mine", "--model", str(checkpoint), "--data", str(world_yaml), "-b", "2", "-o", str(tmp_path / "q")]
    r = invoke(*base, *args)
    assert r.exit_code == 2
    assert needle in " ".join(r.output.replace("│", " ").split()) or needle in r.output


def test_shadow_trigger_against_the_deployed_graph(checkpoint, world_yaml, tmp_path):
    """The graph exported from the same checkpoint agrees with it; a different network does not."""
    from engine_testkit import write_checkpoint

    from hydranet.deploy.export import export_checkpoint
    from hydranet.deploy.runtime import DeployedModel

    export_checkpoint(checkpoint, tmp_path / "same.onnx")
    other = write_checkpoint(tmp_path / "other" / "step_0", seed=5)
    export_checkpoint(other, tmp_path / "other.onnx")
    model = load_mining_model(checkpoint)
    pool = open_pool(str(world_yaml))
    trigs = build_triggers(parse_trigger_specs("shadow"), model_tasks(model))
    same = mine(model, pool, trigs, 3, limit=4, shadow=DeployedModel(tmp_path / "same.onnx"))
    diff = mine(model, pool, trigs, 3, limit=4, shadow=DeployedModel(tmp_path / "other.onnx"))
    assert max(r["score"] for r in same.queue) < 0.01
    assert max(r["score"] for r in diff.queue) > 0.05 and "disagree most on" in diff.queue[0]["reason"]


def test_torchrun_two_ranks_merge_to_the_single_process_queue(checkpoint, world_yaml, tmp_path):
    trig = "condition:name=fog,entropy:task=bev_semantic"
    one = cli("mine", "--model", str(checkpoint), "--data", str(world_yaml), "-t", trig, "-b", "5",
              "-o", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = cli("mine", "--model", str(checkpoint), "--data", str(world_yaml), "-t", trig, "-b", "5",
              "-o", str(tmp_path / "two"),
              module=[sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                      str(_free_port()), "-m", "hydranet"])
    assert two.returncode == 0, two.stderr
    # rank 0 released its lock: the workers end without teardown only after the command's clean-up has run
    assert not [p.name for p in tmp_path.iterdir() if ".lock" in p.name]
    q1 = [json.loads(x) for x in (tmp_path / "one" / "queue.jsonl").read_text().splitlines()]
    q2 = [json.loads(x) for x in (tmp_path / "two" / "queue.jsonl").read_text().splitlines()]
    assert [r["frame_id"] for r in q1] == [r["frame_id"] for r in q2]
    summary = json.loads((tmp_path / "two" / "mine_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["frames"] == 15


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a fixed port collides with other torchrun jobs on the machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
