"""`hydranet train --from CKPT --tasks T --freeze trunk,neck`: only T's head moves; every other head's
tensors (weights and BatchNorm statistics) and outputs stay bit-identical."""

import torch
from subgraph_testkit import invoke, outputs

from hydranet.checkpoint import load_checkpoint, load_model
from hydranet.train.run import shared_note
from hydranet.train.subgraph import changed_tensors


def test_freeze_trunk_neck_leaves_other_heads_bit_identical(base, batch, runner, tmp_path):
    model, _ = load_model(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = outputs(model, batch)

    # No --config: the checkpoint's own config is reused (2 steps, batch 2).
    res = invoke(runner, "train", "--from", base, "--tasks", "depth", "--freeze", "trunk,neck", "-o", tmp_path / "ft",
                 "--no-progress")
    assert res.exit_code == 0, res.output
    assert "note:" not in res.output  # nothing shared trains
    tuned, _ = load_model(tmp_path / "ft")
    after = tuned.state_dict()
    changed = changed_tensors(before, after)
    assert changed and all(k.startswith("heads.depth.") for k in changed), changed
    # BatchNorm running statistics of the frozen trunk/neck are state_dict buffers: compared above too.
    assert any(k.startswith("trunk.") and k.endswith("running_mean") for k in before)
    assert load_checkpoint(tmp_path / "ft").state["trunk_hash"] == load_checkpoint(base).state["trunk_hash"]

    out = outputs(tuned, batch)
    for task in ("drivable", "bev_semantic"):
        for key, value in ref[task].items():
            assert torch.equal(out[task][key], value), f"{task}.{key} changed"
    assert not torch.equal(out["depth"]["log_depth"], ref["depth"]["log_depth"])  # the trained head did move


def test_shared_note_names_heads_a_training_shared_module_would_change(base):
    model, _ = load_model(base)
    assert shared_note(model, ["depth"], ["trunk", "neck"]) is None  # fusion unused by a camera task
    note = shared_note(model, ["depth"], ["trunk"])
    assert note is not None and "['neck']" in note and "bev_semantic" in note and "drivable" in note
    assert shared_note(model, ["bev_semantic"], ["trunk", "neck"]) is None  # the only head reading fusion
    note = shared_note(model, ["bev_semantic"], ["trunk"])
    assert note is not None and "['fusion', 'neck']" in note and "depth" in note and "drivable" in note


def test_add_task_on_images_trains_only_the_new_head(base, batch, runner, tmp_path):
    model, _ = load_model(base)
    before = model.state_dict()
    ref = outputs(model, batch)
    res = invoke(runner, "train", "--from", base, "--add-task", "lanes", "-o", tmp_path / "ft", "--no-progress",
                 "--set", "train.steps=1")
    assert res.exit_code == 0, res.output
    tuned, _ = load_model(tmp_path / "ft")
    after = tuned.state_dict()
    assert changed_tensors(before, after) == []
    assert all(k.startswith("heads.lanes.") for k in set(after) - set(before))
    out = outputs(tuned, batch)
    assert all(torch.equal(out[t][k], v) for t in ref for k, v in ref[t].items())
    assert sorted(load_checkpoint(tmp_path / "ft").state["frozen"])[:3] == ["fusion", "heads.bev_semantic",
                                                                           "heads.depth"]


def test_training_on_images_says_which_heads_a_trained_shared_module_changes(base, runner, tmp_path):
    # Before, only training from a cache said so; on images the other heads were listed as "frozen" alone.
    res = invoke(runner, "train", "--from", base, "--tasks", "depth", "--freeze", "trunk", "-o", tmp_path / "ft",
                 "--no-progress")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "note: shared module(s) ['neck'] train, so the outputs of heads" in text and "bev_semantic" in text
