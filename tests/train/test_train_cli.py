"""`hydranet train` end to end on the real model (tiny preset, 2 tasks, a few world frames):
clear config errors, refusal to overwrite a run, load_model, and sub-graph fine-tuning with a frozen
trunk that leaves every other head's parameters and outputs bit-identical."""

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hydranet.checkpoint import load_checkpoint, load_model, trunk_hash
from hydranet.cli import app
from hydranet.data.sample import collate

WORLD = {"seed": 3, "num_scenes": 1, "frames_per_scene": 6}  # renders the model's setup
CONFIG = {
    "data": {"datasets": {"w": {"kind": "world", "frames": 6, "world": WORLD}}},
    "model": {"preset": "tiny", "setup": {"image_size": [64, 128], "grid": {"cell": 2.0}},
              "tasks": {"drivable": {}, "depth": {}, "bev_semantic": {}}},
    "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "threads": 1, "log_every": 1},
}


@pytest.mark.slow
def test_train_cli_resume_load_and_subgraph_finetune(tmp_path):
    runner = CliRunner()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"

    bad = runner.invoke(app, ["train", "-c", str(cfg), "--set", "train.scheduler.kind=nope", "-o", str(run)])
    assert bad.exit_code == 2 and "train.scheduler.kind: unknown 'nope'" in bad.output

    ok = runner.invoke(app, ["train", "-c", str(cfg), "-o", str(run), "--no-progress", "--set", "train.in_memory=true"])
    assert ok.exit_code == 0, ok.output
    # 6 frames decoded for 2 steps x batch 2: the run says so before it spends the time
    assert "decoding all 6 training samples, but the run draws only 4" in " ".join(ok.output.split())
    assert f"final checkpoint: {run / 'checkpoints' / 'step_00000002'} (step 2)" in " ".join(ok.output.split())
    # The run stores its config: --resume needs only --out (before: "pass a config, or --from CKPT").
    # Resuming a finished run writes nothing (before: a duplicate step_00000002-1 that, with
    # keep_checkpoints, later rotated out the final checkpoint the first run printed).
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    resumed = runner.invoke(app, ["train", "--resume", "-o", str(run), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    final = run / "checkpoints" / "step_00000002"
    assert f"already finished at step 2; nothing to do (final checkpoint {final})" in " ".join(resumed.output.split())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    again = runner.invoke(app, ["train", "-c", str(cfg), "-o", str(run)])
    assert again.exit_code == 2 and "--resume" in again.output  # bad input: --out holds a run

    model, ckpt = load_model(run)
    assert sorted(model.task_objects) == ["bev_semantic", "depth", "drivable"]
    assert ckpt.state["config"]["train"]["steps"] == 2
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    from hydranet.world import SyntheticWorld, WorldConfig

    batch = collate([SyntheticWorld(WorldConfig(**WORLD, setup=model.setup))[i] for i in range(2)])  # its frames
    with torch.no_grad():
        ref = model(batch.images, batch.intrinsics, batch.T_ego_from_cam)

    ft = tmp_path / "ft"
    res = runner.invoke(app, ["train", "-c", str(cfg), "-o", str(ft), "--from", str(run), "--tasks", "drivable",
                              "--freeze", "trunk,neck", "--no-progress"])
    assert res.exit_code == 0, res.output
    tuned, _ = load_model(ft)
    after = tuned.state_dict()
    changed = {k.split(".")[1] if k.startswith("heads.") else k.split(".")[0]
               for k in base_state if not torch.equal(base_state[k], after[k])}
    assert changed == {"drivable"}
    assert load_checkpoint(ft).state["trunk_hash"] == trunk_hash(model)
    with torch.no_grad():
        out = tuned(batch.images, batch.intrinsics, batch.T_ego_from_cam)
    for task in ("depth", "bev_semantic"):
        for key, value in ref[task].items():
            assert torch.equal(out[task][key], value), f"{task}.{key} changed"
    assert not torch.equal(out["drivable"]["logits"], ref["drivable"]["logits"])

    # --resume alone continues the fine-tune with its own --tasks and --freeze (before: an internal error, the loss
    # balancer sized for every task); other --tasks are refused, naming the run's.
    more = runner.invoke(app, ["train", "--resume", "-o", str(ft), "--set", "train.steps=3", "--no-progress"])
    assert more.exit_code == 0, more.output
    resumed_ft, _ = load_model(ft)
    assert load_checkpoint(ft).state["step"] == 3
    assert {k.split(".")[1] if k.startswith("heads.") else k.split(".")[0] for k in base_state
            if not torch.equal(base_state[k], resumed_ft.state_dict()[k])} == {"drivable"}
    other = runner.invoke(app, ["train", "--resume", "-o", str(ft), "--set", "train.steps=4", "--tasks", "depth"])
    assert other.exit_code == 2 and "the run in" in other.output and "trains ['drivable']" in other.output

    nofrom = runner.invoke(app, ["train", "-c", str(cfg), "-o", str(tmp_path / "x"), "--freeze", "trunk"])
    assert nofrom.exit_code != 0 and "--from" in nofrom.output
