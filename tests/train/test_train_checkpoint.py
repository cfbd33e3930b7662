"""Checkpoints: atomic writes (a crash mid-save keeps the previous one loadable), loading never
unpickles, corrupt files are named, resume restores everything, trunk hash semantics."""

import json
import pickle

import pytest
import torch
from train_testkit import make_trainer

from hydranet import checkpoint as ck
from hydranet.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, trunk_hash


def test_crash_during_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    tr = make_trainer(tmp_path, steps=2)
    tr.fit()  # final checkpoint at step 2
    good = resolve_checkpoint(tmp_path)
    assert good.name == "step_00000002"
    real_write = ck._write_file

    class Killed(BaseException):  # like kill -9: no cleanup handler runs
        pass

    def crash(path, data):
        if path.name == "state.json":
            raise Killed("simulated crash mid-save")
        real_write(path, data)

    tr.step = 3
    monkeypatch.setattr(ck, "_write_file", crash)
    with pytest.raises(Killed):
        tr.save()
    assert list(tmp_path.glob("checkpoints/.tmp-*"))  # the half-written directory is hidden
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.path == good and ckpt.state["step"] == 2
    monkeypatch.setattr(ck, "_write_file", real_write)
    tr.save()
    assert resolve_checkpoint(tmp_path).name == "step_00000003"
    assert not list(tmp_path.glob("checkpoints/.tmp-*"))  # leftovers cleaned by the next save


def test_loading_never_unpickles(tmp_path, monkeypatch):
    tr = make_trainer(tmp_path, steps=2)
    tr.fit()

    def forbidden(*a, **k):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    again = make_trainer(tmp_path, steps=2)
    assert again.resume()
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    assert again.optimizer.state_dict()["state"].keys() == tr.optimizer.state_dict()["state"].keys()


def test_corrupt_and_missing_files_are_named(tmp_path):
    tr = make_trainer(tmp_path, steps=1)
    tr.fit()
    path = resolve_checkpoint(tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupt safetensors file"):
        load_checkpoint(path)
    (path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state.json: unreadable"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="nothing: no such checkpoint or run directory"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()  # a directory that is neither a checkpoint nor a run
    with pytest.raises(CheckpointError, match="empty: not a checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_resume_restores_state_and_continues_identically(tmp_path):
    full = make_trainer(tmp_path / "full", steps=6, balancing={"kind": "gradnorm", "gradnorm": {"shared": "neck"}})
    full.fit()
    part = make_trainer(tmp_path / "part", steps=6, ckpt_every=3, balancing={"kind": "gradnorm",
                                                                            "gradnorm": {"shared": "neck"}})
    step = part.train_step

    def crash_at_5(batches):
        if part.step == 4:
            raise RuntimeError("crash")
        return step(batches)

    part.train_step = crash_at_5
    with pytest.raises(RuntimeError, match="crash"):
        part.fit()  # checkpoint at step 3, then one more step (lost), then the crash
    resumed = make_trainer(tmp_path / "part", steps=6, balancing={"kind": "gradnorm", "gradnorm": {"shared": "neck"}})
    assert resumed.resume() and resumed.step == 3 and resumed.scheduler.micro_step == 3
    resumed.fit()
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=1e-6)
    assert resumed.balancer.weights() == pytest.approx(full.balancer.weights(), abs=1e-6)
    state = json.loads((resolve_checkpoint(tmp_path / "part") / "state.json").read_text())
    assert state["step"] == 6 and state["scheduler"]["micro_step"] == 6 and len(state["rng"]) == 1


def test_trunk_hash_tracks_trunk_and_neck_only(tmp_path):
    tr = make_trainer(tmp_path, steps=1)
    h = trunk_hash(tr.model)
    with torch.no_grad():
        tr.model.heads["tiny_depth"].weight.add_(1)
    assert trunk_hash(tr.model) == h
    with torch.no_grad():
        tr.model.neck[0].bias.add_(1e-3)
    assert trunk_hash(tr.model) != h
    tr.fit()
    assert load_checkpoint(tmp_path).state["trunk_hash"] == trunk_hash(tr.model)
