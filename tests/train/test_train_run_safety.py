"""Runs never lose work or mix up: resume falls back to the newest valid
checkpoint, the checkpoint swap is crash-safe at every instant, disk-full saves fail cleanly, and a
run directory is locked against a second process."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from train_testkit import make_trainer, tiny_config

from hydranet import checkpoint as ck
from hydranet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest_valid,
    resolve_checkpoint,
    save_checkpoint,
)
from hydranet.train.config import config_to_dict
from hydranet.train.run import RunLockedError, foreign_entries, training_session

ROOT = Path(__file__).resolve().parents[2]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_falls_back_to_the_newest_valid_checkpoint_and_never_prunes_it(tmp_path):
    full = make_trainer(tmp_path, steps=6, ckpt_every=2)
    full.fit()  # keeps step 4 and step 6 (keep_checkpoints=2)
    newest = resolve_checkpoint(tmp_path)
    assert newest.name == "step_00000006"
    _truncate(newest / "model.safetensors")

    again = make_trainer(tmp_path, steps=6, ckpt_every=2)
    assert again.resume()  # before: a silent restart at step 0
    assert again.step == 4
    assert "model.safetensors" in again.resume_note and "step 4" in again.resume_note
    assert (tmp_path / "checkpoints" / "corrupt_step_00000006").is_dir()  # kept for inspection, never pruned over
    again.fit()
    done = load_checkpoint(tmp_path)
    assert done.state["step"] == 6
    for k, v in full.model.state_dict().items():  # resumed run ends where the uninterrupted one did
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_resume_with_no_valid_checkpoint_names_the_file(tmp_path):
    make_trainer(tmp_path, steps=2).fit()
    _truncate(resolve_checkpoint(tmp_path) / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"step_00000002/model.safetensors: corrupt"):
        make_trainer(tmp_path, steps=4).resume()  # before: returned False and training restarted
    assert (tmp_path / "checkpoints" / "step_00000002").is_dir()  # nothing pruned


def test_resume_when_the_pointer_names_a_missing_directory(tmp_path):
    make_trainer(tmp_path, steps=4, ckpt_every=2).fit()
    (tmp_path / "checkpoints" / "latest.json").write_text('{"checkpoint": "step_00000009", "step": 9}')
    again = make_trainer(tmp_path, steps=4, ckpt_every=2)
    assert again.resume() and again.step == 4
    assert "step_00000009: missing" in again.resume_note


class Crash(BaseException):
    """kill -9 stand-in: not an Exception, so no cleanup handler runs."""


def _crash_after(monkeypatch, budget: int) -> list[str]:
    """Make the ``budget``-th filesystem operation of a save raise ``Crash`` (calls counted in order)."""
    calls: list[str] = []
    real = {"write": ck._write_file, "fsync": ck._fsync_dir, "replace": os.replace, "remove": ck._remove}

    def wrap(name, fn):
        def inner(*a, **k):
            calls.append(name)
            if len(calls) == budget:
                raise Crash(name)
            return fn(*a, **k)
        return inner

    monkeypatch.setattr(ck, "_write_file", wrap("write", real["write"]))
    monkeypatch.setattr(ck, "_fsync_dir", wrap("fsync", real["fsync"]))
    monkeypatch.setattr(ck, "_remove", wrap("remove", real["remove"]))
    monkeypatch.setattr(ck.os, "replace", wrap("replace", real["replace"]))
    return calls


@pytest.mark.parametrize("resave", [True, False], ids=["resave-same-step", "new-step"])
def test_checkpoint_swap_is_crash_safe_at_every_instant(tmp_path, monkeypatch, resave):
    model = nn.Linear(3, 2)
    budget, finished = 1, False
    while not finished:  # crash at the 1st, 2nd, ... filesystem operation until a save completes
        root = tmp_path / f"kill{budget}" / "checkpoints"
        with torch.no_grad():
            model.weight.fill_(1.0)
        save_checkpoint(root / "step_00000002", model, {"step": 2}, keep=1)
        with torch.no_grad():
            model.weight.fill_(2.0)
        calls = _crash_after(monkeypatch, budget)
        try:
            save_checkpoint(root / ("step_00000002" if resave else "step_00000003"), model, {"step": 3}, keep=1)
            finished = True
        except Crash:
            pass
        monkeypatch.undo()
        ckpt, note = load_latest_valid(root)
        assert note is None, f"crash at operation {budget} ({calls[-1]}): {note}"
        weight = float(ckpt.model["weight"][0, 0])
        assert (ckpt.state["step"], weight) in ((2, 1.0), (3, 2.0)), f"crash at {budget} ({calls[-1]})"
        if finished:
            assert (ckpt.state["step"], weight) == (3, 2.0)
            assert [p.name for p in root.iterdir() if p.is_dir()] == [ckpt.path.name]  # old one pruned
        budget += 1
    assert budget > 6  # the save really has that many crash points


def test_disk_full_during_save_is_a_clear_error_and_keeps_the_previous(tmp_path, monkeypatch):
    tr = make_trainer(tmp_path, steps=2)
    tr.fit()
    good = resolve_checkpoint(tmp_path)
    real_write = ck._write_file

    def full(path, data):
        if path.name == "optimizer.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    tr.step = 3
    monkeypatch.setattr(ck, "_write_file", full)
    with pytest.raises(CheckpointError, match=r"step_00000003: could not write the checkpoint \(No space left"):
        tr.save()
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # the partial copy is gone
    assert not (tmp_path / "checkpoints" / "step_00000003").exists()
    assert load_checkpoint(tmp_path).path == good


HOLD = """
import sys, time
from pathlib import Path
from hydranet.train.distributed import DistInfo
from hydranet.train.run import run_lock
with run_lock(Path(sys.argv[1]), DistInfo()):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_process_refuses_a_locked_run_directory_naming_the_holder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by another hydranet process \(pid {holder.pid}"):
            with training_session(tiny_config(device="cpu"), tmp_path, resume=False):
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with training_session(tiny_config(device="cpu"), tmp_path, resume=False):  # the OS released the dead holder's lock
        assert (tmp_path / "run.lock.pid").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "run.lock.pid").exists()


def test_resuming_a_finished_run_writes_nothing_and_keeps_its_final_checkpoint(tmp_path):
    """Before: a duplicate ``step_00000004-1`` on every resume, and with keep_checkpoints=2 the second one
    rotated out the ``step_00000004`` the first run printed as its final checkpoint."""
    first = make_trainer(tmp_path, steps=4, ckpt_every=2, keep_checkpoints=2).fit()
    final = tmp_path / "checkpoints" / "step_00000004"
    assert first["checkpoint"] == str(final)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    for _ in range(2):
        again = make_trainer(tmp_path, steps=4, ckpt_every=2, keep_checkpoints=2)
        assert again.resume() and again.step == 4
        summary = again.fit()
        assert summary["already_finished"] and summary["checkpoint"] == str(final)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before and final.is_dir()
    assert resolve_checkpoint(tmp_path) == final


def test_a_run_that_fails_to_start_leaves_no_run_directory(tmp_path):
    """Before: a typo in --tasks, or data that does not open, left OUT/config.yaml behind."""
    from hydranet.train.config import config_from_dict, config_to_dict
    from hydranet.train.run import run_training

    cfg = tiny_config()
    with pytest.raises(ValueError, match=r"--tasks \['tiny_dept'\]: not tasks of the model"):
        run_training(cfg, tmp_path / "typo", tasks=["tiny_dept"], progress=False)
    assert not (tmp_path / "typo").exists()
    tree = config_to_dict(cfg)
    tree["data"]["datasets"]["tiny"] = {"kind": "shards", "path": str(tmp_path / "no_such_shards")}
    with pytest.raises(Exception, match="no_such_shards"):
        run_training(config_from_dict(tree, "<tiny>"), tmp_path / "nodata", progress=False)
    assert not (tmp_path / "nodata").exists()


def test_a_new_run_never_writes_over_files_that_are_not_a_runs(tmp_path):
    """Before: ``train --out mydir`` replaced the user's own ``config.yaml`` and appended to their
    ``train_log.jsonl``; a shard dataset's folder took a run too. A new run starts only in a missing or empty
    folder; one that a run left before its first checkpoint is continued with ``--resume``; a resume needs a run."""
    cfg = tiny_config(device="cpu")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("model: {preset: tiny}  # my own experiment\ntrain: {steps: 2}\n")
    (mine / "train_log.jsonl").write_text("mine\n")
    with pytest.raises(FileExistsError, match=r"mine is not empty \(config\.yaml, train_log\.jsonl\); a new run "
                                              r"starts in a missing or empty folder: pass --resume"):
        with training_session(cfg, mine, resume=False):
            pass
    assert (mine / "config.yaml").read_text().endswith("# my own experiment\ntrain: {steps: 2}\n")
    assert (mine / "train_log.jsonl").read_text() == "mine\n"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine\n")
    with pytest.raises(FileExistsError, match=r"notes is not empty \(notes\.txt\); a new run starts in a missing or "
                                              r"empty folder: choose another --out \(it holds no run to resume\)"):
        with training_session(cfg, notes, resume=False):
            pass
    with pytest.raises(FileExistsError, match=r"notes holds no run to resume \(no config\.yaml; it holds notes\.txt"):
        with training_session(cfg, notes, resume=True):
            pass
    started = tmp_path / "started"  # what a run killed before its first checkpoint leaves
    started.mkdir()
    (started / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    (started / "train_log.jsonl").write_text('{"step": 1}\n')
    with training_session(cfg, started, resume=True):
        pass
    with training_session(cfg, tmp_path / "empty", resume=False):
        pass


def test_a_runs_own_leftover_temporary_files_are_not_foreign(tmp_path):
    """A run killed while it rewrote its log on resume leaves ``.tmp-train_log.jsonl-PID``: the demo, which refuses
    an ``OUT/train`` holding files a run does not write, must not refuse its own run for it; a user's files still
    count."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    (run / ".tmp-train_log.jsonl-4242").write_text('{"step": 1}\n')
    assert foreign_entries(run) == []
    for name in (".tmp-notes.txt-4242", ".tmp-train_log.jsonl-x", "train_log.jsonl-4242"):
        (run / name).write_text("mine\n")
    assert foreign_entries(run) == [".tmp-notes.txt-4242", ".tmp-train_log.jsonl-x", "train_log.jsonl-4242"]


def test_periodic_eval_without_held_out_frames_is_refused_before_the_run_starts(tmp_path):
    """Before: ``train.eval_every`` with ``data.eval: null`` trained and never evaluated, without a word."""
    from hydranet.train.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.eval_every is 1 but data\.eval .* is not set"):
        with training_session(tiny_config(device="cpu", eval_every=1), tmp_path / "run", resume=False):
            pass
    assert not (tmp_path / "run").exists()


def test_resuming_on_another_number_of_ranks_says_the_global_batch_changes(tmp_path):
    """Before: a two-rank run resumed by one process halved its global batch without a word."""
    import json

    make_trainer(tmp_path, steps=2, ckpt_every=2).fit()
    state_file = tmp_path / "checkpoints" / "step_00000002" / "state.json"
    state = json.loads(state_file.read_text())
    state["world_size"], state["rng"] = 2, state["rng"] * 2  # as a two-rank job saves it
    state_file.write_text(json.dumps(state))
    again = make_trainer(tmp_path, steps=4, ckpt_every=2)
    assert again.resume() and again.step == 2
    assert "trained on 2 rank(s) and resumes on 1: its global batch goes from 8 to 4" in again.resume_note


def test_a_checkpoint_that_does_not_fit_the_config_names_the_settings_that_differ():
    """Before: "tensor fusion.sampler.reduce.0.weight has shape ...: is the model section the checkpoint's?" and
    nothing on which setting to change."""
    from hydranet.checkpoint import load_checkpoint
    from hydranet.model import ModelConfig, create_model
    from hydranet.train.run import _load_from

    trained = load_checkpoint("zoo:tiny-world").state["model_config"]
    cfg = ModelConfig.model_validate({**trained, "fusion": {**trained["fusion"], "heights": [0.0, 1.0]}})
    with pytest.raises(ck.CheckpointError, match=r"the model settings that differ: fusion.heights: the checkpoint "
                                                 r"\[0.0, 0.5, 1.0, 2.0, 3.5, 5.5\], the config \[0.0, 1.0\]"):
        _load_from(create_model(cfg), "zoo:tiny-world")


def test_a_run_config_is_the_same_config_however_it_is_written(tmp_path):
    """``same_run_config``: what `train` (whether to rewrite config.yaml) and `hydranet demo` (whether to reuse its
    run) ask of a run's config.yaml: the file as the run wrote it, or written by hand with its defaults left out
    or spelled out, is the same config; another value, or a file that is no config, is not."""
    from hydranet.train.run import same_run_config

    cfg = tiny_config()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert same_run_config(path, cfg)
    by_hand = {"data": {"datasets": {"tiny": {"kind": "world", "frames": 64, "world": {"rate_hz": 10.0}}}},
               "model": {"tasks": {"tiny_depth": {}, "tiny_drivable": {}}},
               "train": {"steps": 6, "batch_size": 4, "lr": 1e-2, "warmup_steps": 2, "log_every": 2,
                         "precision": "fp32"}}
    path.write_text("# by hand\n" + yaml.safe_dump(by_hand))
    assert same_run_config(path, cfg)
    by_hand["train"]["lr"] = 2e-2
    path.write_text(yaml.safe_dump(by_hand))
    assert not same_run_config(path, cfg)
    path.write_text("data: [unclosed\n")
    assert not same_run_config(path, cfg)


def test_the_demo_trains_afresh_when_its_world_was_rendered_again(tmp_path):
    """The demo's run names its data by shard path, which a re-render keeps: an edited world re-renders the data,
    and the finished run on the old frames must not be reused (it was, printing the old run's figures)."""
    from io import StringIO

    from rich.console import Console

    from hydranet.train.config import config_from_dict
    from hydranet.train.demo import _train_or_reuse, materialise_shards

    def demo_config(seed: int):
        world = {"seed": seed, "num_scenes": 2, "frames_per_scene": 2}
        return config_from_dict({
            "data": {"datasets": {"w": {"kind": "world", "frames": 4, "world": world}}},
            "model": {"preset": "tiny", "setup": {"image_size": [32, 64],
                                                  "grid": {"x_range": [-8, 8], "y_range": [-8, 8], "cell": 1.0}},
                      "tasks": {"drivable": {}}},
            "train": {"steps": 2, "batch_size": 1, "warmup_steps": 1, "threads": 1}}, "<demo>")

    def demo(seed: int) -> str:
        text = StringIO()
        console = Console(file=text, width=300)
        cfg = materialise_shards(demo_config(seed), tmp_path / "data", console, workers=1)
        _train_or_reuse(cfg, tmp_path / "train", retrain=False, console=console)
        return text.getvalue()

    assert "final checkpoint" in demo(1)
    again = demo(1)
    assert "reusing the finished training run" in again and "final checkpoint" not in again
    edited = demo(2)  # same shard path, other frames
    assert f"the data in {tmp_path / 'data' / 'w'} were rendered after the run" in edited
    assert "final checkpoint" in edited and "reusing" not in edited
    assert "reusing the finished training run" in demo(2)
