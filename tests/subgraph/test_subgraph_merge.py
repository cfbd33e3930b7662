"""`hydranet merge BASE HEAD...`: heads trained separately on one trunk combine into one checkpoint;
mismatched trunks (and fusions, duplicates) are refused; the regression gate runs against BASE."""

import json

import pytest
import torch
import yaml
from subgraph_testkit import invoke, outputs

from hydranet.checkpoint import load_checkpoint, load_model
from hydranet.train.merge import MergeError, parse_head_spec, plan_merge

SUITE = {"name": "tiny", "world": {"num_scenes": 1, "frames_per_scene": 2, "lighting": "day", "fog": 0.0},
         "scenarios": {"day": {}}, "seeds": [50, 51], "frames": 2, "bootstrap": 20,
         "tasks": {"drivable": {}, "depth": {}, "bev_semantic": {}, "lanes": {}}}


@pytest.fixture(scope="module")
def heads(base, cache, runner, tmp_path_factory):
    """Two owners' runs from BASE's cache: one adds lanes, one fine-tunes the BEV head."""
    root = tmp_path_factory.mktemp("heads")
    for name, args in {"lanes": ["--add-task", "lanes"], "bev": ["--tasks", "bev_semantic"]}.items():
        res = invoke(runner, "train", "--from", base, *args, "--from-cache", cache, "-o", root / name, "--no-progress")
        assert res.exit_code == 0, res.output
    return root


def test_merge_combines_heads_and_gates_against_base(base, heads, batch, runner, tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    res = invoke(runner, "merge", base, heads / "lanes", heads / "bev", "-o", tmp_path / "m", "--gate-suite", suite)
    assert res.exit_code == 0, res.output
    assert "gate PASS" in res.output
    merged = load_checkpoint(tmp_path / "m")
    gate = merged.state["merge"]["gate"]
    assert gate["passed"] and {r["task"] for r in gate["rows"]} == {"drivable", "depth", "bev_semantic", "lanes"}
    assert merged.state["trunk_hash"] == load_checkpoint(base).state["trunk_hash"]
    b, lanes, bev = (load_checkpoint(p).model for p in (base, heads / "lanes", heads / "bev"))
    for k, v in merged.model.items():
        src = lanes if k.startswith("heads.lanes.") else bev if k.startswith("heads.bev_semantic.") else b
        assert torch.equal(v, src[k]), k
    assert not torch.equal(merged.model["heads.bev_semantic.head.stem.0.0.weight"],
                           b["heads.bev_semantic.head.stem.0.0.weight"])
    # The merged network answers like each owner's network on that owner's head.
    model, _ = load_model(tmp_path / "m")
    out = outputs(model, batch)
    for run, task in ((heads / "lanes", "lanes"), (heads / "bev", "bev_semantic"), (base, "drivable")):
        ref = outputs(load_model(run)[0], batch)
        assert all(torch.equal(out[task][k], v) for k, v in ref[task].items()), task


def test_merge_refuses_mismatched_trunk_and_ambiguity(base, other_trunk, heads, runner, tmp_path):
    mine = load_checkpoint(base).state["trunk_hash"]
    other = load_checkpoint(other_trunk).state["trunk_hash"]
    with pytest.raises(MergeError, match="trunk") as e:
        plan_merge(base, [f"{other_trunk}:drivable"])
    assert mine[:16] in str(e.value) and other[:16] in str(e.value)
    res = invoke(runner, "merge", base, f"{other_trunk}:drivable", "-o", tmp_path / "x")
    assert res.exit_code == 2 and "trunk" in res.output and not (tmp_path / "x").exists()
    with pytest.raises(MergeError, match="supplied by both"):
        plan_merge(base, [str(heads / "bev"), f"{heads / 'lanes'}:bev_semantic"])
    with pytest.raises(MergeError, match="no head 'objects3d'"):
        plan_merge(base, [f"{heads / 'lanes'}:objects3d"])
    assert parse_head_spec("runs/a:lanes,depth") == ("runs/a", ["lanes", "depth"])
    assert parse_head_spec("runs/a") == ("runs/a", None)
    assert parse_head_spec("zoo:tiny") == ("zoo:tiny", None)  # the entry, not the path "zoo" with a task "tiny"
    assert parse_head_spec("zoo:tiny:lanes") == ("zoo:tiny", ["lanes"])


def test_merge_refuses_bev_head_trained_with_another_fusion(base, heads, runner, tmp_path):
    # fusion trains when not frozen: that BEV head then expects other BEV features.
    res = invoke(runner, "train", "--from", base, "--tasks", "bev_semantic", "--freeze", "trunk,neck",
                 "-o", tmp_path / "f", "--no-progress", "--set", "train.steps=1")
    assert res.exit_code == 0, res.output
    with pytest.raises(MergeError, match="fusion"):
        plan_merge(base, [str(tmp_path / "f")])
    state = json.loads((tmp_path / "f" / "checkpoints" / "latest.json").read_text())
    assert state["step"] == 1


def test_merge_says_which_model_settings_differ(base, heads, tmp_path):
    # Before: "model settings ['setup'] differ", with no word on what differs or what to do.
    import shutil

    from hydranet.checkpoint import resolve_checkpoint

    head = tmp_path / "head"
    shutil.copytree(resolve_checkpoint(heads / "lanes"), head)
    state = json.loads((head / "state.json").read_text())
    state["model_config"]["setup"]["image_size"] = [48, 96]
    (head / "state.json").write_text(json.dumps(state))
    with pytest.raises(MergeError, match=r"model settings differ from BASE .*: setup.image_size: BASE \[\d+, \d+\], "
                                         r"this checkpoint \[48, 96\]\. A head trained for another rig"):
        plan_merge(base, [str(head)])


def test_merge_names_a_zoo_model_as_typed(other_trunk, runner, tmp_path):
    """``zoo:tiny-world`` is named so in every line, as the user typed it; before, each named the folder inside the
    installed package it resolves to (``.../hydranet/model/pretrained/tiny-world``), the advice to fine-tune
    included."""
    from hydranet.model import find_pretrained

    folder = str(find_pretrained("tiny-world").directory)
    res = invoke(runner, "merge", "zoo:tiny-world", "zoo:tiny-world:nope", "-o", tmp_path / "a")
    assert res.exit_code == 2 and "error: zoo:tiny-world: has no head 'nope'" in res.output, res.output
    res = invoke(runner, "merge", "zoo:tiny-world", f"{other_trunk}:drivable", "-o", tmp_path / "b")
    line = " ".join(res.output.split())
    assert res.exit_code == 2 and "but BASE zoo:tiny-world has trunk" in line, line
    assert "(hydranet train --from zoo:tiny-world --freeze trunk,neck)" in line and folder not in line
    res = invoke(runner, "merge", "zoo:tiny-world", "zoo:tiny-world:lanes", "-o", tmp_path / "c")
    line = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "merging into zoo:tiny-world (trunk " in line and "lanes <- zoo:tiny-world" in line and folder not in line
    assert load_checkpoint("zoo:tiny-world").name == load_model("zoo:tiny-world")[1].name == "zoo:tiny-world"
    assert load_checkpoint(tmp_path / "c").name == str(load_checkpoint(tmp_path / "c").path)  # a path: its own
