"""Trainer behaviour: non-finite steps skipped and counted, per-task losses only where labels are
present, frozen sub-graphs stay bit-identical, warmup-cosine schedule, eval hook."""

import math

import torch
from train_testkit import make_trainer

from hydranet.checkpoint import load_checkpoint
from hydranet.train.config import TrainConfig
from hydranet.train.optim import lr_at


def test_non_finite_loss_skips_the_step_and_is_counted(tmp_path):
    tr = make_trainer(tmp_path, steps=5)
    task = tr.tasks["tiny_depth"]
    original = task.loss
    calls = {"n": 0}

    def flaky(outputs, batch):
        calls["n"] += 1
        out = original(outputs, batch)
        return {"loss": out["loss"] * float("nan")} if calls["n"] == 3 else out

    task.loss = flaky
    snapshots = []
    step = tr.train_step

    def record(batches):
        snapshots.append({k: v.clone() for k, v in tr.model.state_dict().items()})
        return step(batches)

    tr.train_step = record
    tr.fit()
    final = {k: v.clone() for k, v in tr.model.state_dict().items()}
    snapshots.append(final)
    assert tr.skipped_steps == 1 and tr.step == 5
    # step 3 (index 2) changed nothing; every other step did
    assert all(torch.equal(snapshots[2][k], snapshots[3][k]) for k in final)
    assert not all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in final)
    assert all(torch.isfinite(v).all() for v in final.values())
    assert load_checkpoint(tmp_path).state["skipped_steps"] == 1
    assert tr.history[-1]["skipped_steps"] == 1


def test_losses_only_for_tasks_with_labels(tmp_path):
    for loss_tasks in ("present", "scheduled"):
        tr = make_trainer(tmp_path / loss_tasks, steps=8, batch_size=2,
                          scheduler={"kind": "round_robin", "loss_tasks": loss_tasks})
        seen = []
        backward = tr.balancer.backward
        forward = tr.forward

        def spy_forward(batch, tasks, seen=seen, forward=forward):
            seen.append({"present": {k: bool(v.any()) for k, v in batch.present.items()}, "run": list(tasks)})
            return forward(batch, tasks)

        def spy_backward(losses, scale, seen=seen, backward=backward):
            seen[-1]["losses"] = sorted(losses)
            return backward(losses, scale)

        tr.forward, tr.balancer.backward = spy_forward, spy_backward
        tr.fit()
        assert len(seen) == 8
        for k, s in enumerate(seen):
            label = {"tiny_depth": "depth", "tiny_drivable": "drivable"}
            scheduled = ["tiny_depth", "tiny_drivable"][k % 2]
            assert s["present"][label[scheduled]]  # the scheduled task's batch carries its label
            expect = sorted(t for t in label if s["present"].get(label[t], False))
            assert s["losses"] == (expect if loss_tasks == "present" else [scheduled])


def test_frozen_trunk_and_other_heads_stay_bit_identical(tmp_path):
    tr = make_trainer(tmp_path, steps=4)
    tr.fit()
    base = {k: v.clone() for k, v in tr.model.state_dict().items()}
    from train_testkit import TinyDataset, _tiny_tasks, tiny_config

    from hydranet.data.sample import collate
    from hydranet.train.trainer import Trainer

    batch = collate([TinyDataset()[i] for i in range(4)])
    tr.model.eval()
    with torch.no_grad():
        ref = tr.model(batch.images, batch.intrinsics, batch.T_ego_from_cam)
    ft = Trainer(tiny_config(steps=3, lr=0.1), tr.model, TinyDataset(), tmp_path / "ft", tasks=_tiny_tasks(),
                 train_tasks=["tiny_drivable"], frozen=["trunk", "neck"], progress=False)
    assert ft.frozen == ["trunk", "neck", "heads.tiny_depth"]
    ft.fit()
    after = ft.model.state_dict()
    changed = sorted(k for k in base if not torch.equal(base[k], after[k]))
    assert changed == ["heads.tiny_drivable.bias", "heads.tiny_drivable.weight"]
    ft.model.eval()
    with torch.no_grad():
        out = ft.model(batch.images, batch.intrinsics, batch.T_ego_from_cam)
    assert torch.equal(out["tiny_depth"]["pred"], ref["tiny_depth"]["pred"])
    assert not torch.equal(out["tiny_drivable"]["pred"], ref["tiny_drivable"]["pred"])


def test_warmup_cosine_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == 0.1 and lr_at(9, cfg) == 1.0
    assert lr_at(10, cfg) == 1.0
    assert math.isclose(lr_at(55, cfg), 0.1 + 0.9 * 0.5)
    assert math.isclose(lr_at(100, cfg), 0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))


def test_eval_hook_and_grad_accumulation(tmp_path):
    tr = make_trainer(tmp_path, steps=4, grad_accum=2, eval_every=2, eval_batches=2)
    tr.fit()
    assert [e["step"] for e in tr.eval_history] == [2, 4]
    assert set(tr.eval_history[-1]) == {"step", "tiny_depth", "tiny_drivable"}
    assert tr.eval_history[-1]["tiny_depth"]["n"] > 0
    assert tr.scheduler.micro_step == 8
    assert (tmp_path / "train_log.jsonl").read_text().count('"eval"') == 2
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    tr = make_trainer(tmp_path, steps=50, time_limit_s=1e-9)
    summary = tr.fit()
    assert summary["stopped_early"] and summary["steps"] == 1 and summary["planned_steps"] == 50
    assert load_checkpoint(tmp_path).state["step"] == 1


def test_a_stop_right_after_a_periodic_save_writes_no_second_checkpoint(tmp_path, monkeypatch):
    # Ctrl-C lands at a step that ckpt_every just saved: that checkpoint is the run's last, not saved again as "-1".
    monkeypatch.setattr("hydranet.train.trainer.stop_requested", lambda device=None: True)
    tr = make_trainer(tmp_path, steps=50, ckpt_every=1)
    summary = tr.fit()
    assert summary["steps"] == 1 and summary["checkpoint"].endswith("step_00000001")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000001"]


def _bn_trainer(tmp_path, **train):
    """The tiny trainer with BatchNorm in the trunk (the real HydraNet's normalisation)."""
    from train_testkit import TinyDataset, TinyModel, _tiny_tasks, tiny_config

    from hydranet.train.trainer import Trainer

    torch.manual_seed(0)
    tasks = _tiny_tasks()
    model = TinyModel(tasks)
    model.trunk[1] = torch.nn.BatchNorm2d(8)
    return Trainer(tiny_config(**train), model, TinyDataset(), tmp_path, tasks=tasks, progress=False)


def test_skipped_step_leaves_batchnorm_statistics_untouched(tmp_path):
    tr = _bn_trainer(tmp_path, steps=3)
    task = tr.tasks["tiny_depth"]
    original = task.loss
    task.loss = lambda outputs, batch: {"loss": original(outputs, batch)["loss"] * float("nan")}
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.train_mode()
    out = tr.train_step(tr._loader())
    assert out["skipped"] and tr.skipped_steps == 1
    after = tr.model.state_dict()
    assert "trunk.1.running_mean" in after
    for k, v in before.items():  # before the fix running_mean/var and num_batches_tracked moved
        assert torch.equal(v, after[k]), k


def test_consecutive_skipped_steps_stop_with_the_step_and_tasks(tmp_path):
    import pytest

    from hydranet.train.trainer import NonFiniteTrainingError

    tr = make_trainer(tmp_path, steps=50, max_consecutive_skips=4)
    task = tr.tasks["tiny_drivable"]
    original = task.loss
    task.loss = lambda outputs, batch: {"loss": original(outputs, batch)["loss"] * float("inf")}
    with pytest.raises(NonFiniteTrainingError, match=r"step 4: 4 consecutive steps skipped .*\['tiny_drivable'\]"):
        tr.fit()  # before: 50 "steps" that trained nothing, exit 0
    assert TrainConfig().max_consecutive_skips == 20


def test_a_good_step_resets_the_consecutive_skip_count(tmp_path):
    tr = make_trainer(tmp_path, steps=8, max_consecutive_skips=2)
    task = tr.tasks["tiny_depth"]
    original = task.loss
    calls = {"n": 0}

    def every_other(outputs, batch):
        calls["n"] += 1
        out = original(outputs, batch)
        return {"loss": out["loss"] * float("nan")} if calls["n"] % 2 else out

    task.loss = every_other
    tr.fit()
    assert tr.step == 8 and 0 < tr.skipped_steps < 8
