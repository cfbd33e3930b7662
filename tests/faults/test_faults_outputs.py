"""Classes 1 and 2 of issue 22: an output never eats an input, and one writer per output.

Every command's ``--out`` is checked against every path it reads before anything is written
(``hydranet.outputs.check_output`` via ``hydranet.cli.guard``); every command that writes a directory holds
its lock (``output_lock``). The inputs are hashed before and after each refusal: nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from faults_kit import child_generate, cli, error_line, forkserver, leftovers, train_config, world_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydranet.cli.guard import DIRECTORY_OUTPUTS, FILE_OUTPUTS
from hydranet.data.manifest import read_manifest
from hydranet.outputs import OutputError, check_output, lock_file, output_lock, staged_directory


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
        if p.is_file() and not p.name.endswith(".lock"):
            h.update(str(p.relative_to(root.parent)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def inputs(tmp_path, ckpt, dataset, graph):
    """Private copies of a run, a dataset, a graph (+ manifest), a queue and configs to aim outputs at."""
    run = shutil.copytree(ckpt, tmp_path / "run")
    data = shutil.copytree(dataset, tmp_path / "data")
    onnx = tmp_path / "model.onnx"
    shutil.copy(graph, onnx)
    shutil.copy(graph.with_name("model.manifest.json"), tmp_path / "model.manifest.json")
    queue = tmp_path / "queue"
    queue.mkdir()
    (queue / "queue.jsonl").write_text(json.dumps({"rank": 1, "index": 0, "frame_id": "x#0"}) + "\n")
    cfg = train_config(tmp_path / "cfg.yaml")
    world = world_file(tmp_path / "gen" / "world.yaml")
    return {"run": run, "data": data, "onnx": onnx, "queue": queue, "cfg": cfg, "world": world, "tmp": tmp_path}


# (command template, what the output collides with)
OVERLAPS = [
    ("convert shards --path {data} --out {data} --overwrite", "the dataset converted"),
    ("convert shards --path {data} --out {data}/sub", "inside the dataset converted"),
    ("label --queue {queue} --data {data} --out {data}", "the pool being labelled"),
    ("label --queue {queue} --data shards:{data} --out {data}", "the pool, named KIND:PATH"),
    ("export {run} -o {run}/checkpoints/step_00000001/model.safetensors", "the checkpoint's own weights"),
    ("quantize {onnx} -o {onnx}", "the fp32 graph"),
    ("infer {onnx} --data {data} -o {data}", "the data inferred on"),
    ("cache-features --ckpt {run} --data {data} -o {run}/checkpoints --overwrite", "the run's checkpoints"),
    ("merge {run} {run} -o {run}", "the base checkpoint"),
    ("train --from {run} -c {cfg} -o {run}", "the checkpoint trained from"),
    ("mine --model {run} --data {data} --budget 1 -o {data}", "the pool mined"),
    ("show --data {data} -o {data}/manifest.json", "the dataset's manifest"),
    ("eval {run} -o {run}/checkpoints/step_00000001/state.json", "the checkpoint's state"),
    ("generate --config {world} --frames 1 -o {tmp}/gen --force", "a folder holding the world config"),
    ("convert shards --path {data} --out {tmp} --overwrite", "a folder holding the dataset"),
    ("predict {run} --data {data} -o {run}/checkpoints/step_00000001", "inside the checkpoint"),
    ("predict {run} --data {data} -o {data}", "the data predicted on"),
    ("predict {run} --data {data} -o {data}/pred", "inside the data predicted on"),
    ("predict {run} --data {data} -o {tmp} --overwrite", "a folder holding the data predicted on"),
    ("infer {onnx} --data {data} -o {data}/pred", "inside the data inferred on"),
    ("infer {onnx} --data {data} -o {tmp} --overwrite", "a folder holding the graph"),
]


@pytest.mark.parametrize("template,what", OVERLAPS, ids=[w for _, w in OVERLAPS])
def test_an_output_that_is_or_holds_an_input_is_refused_before_anything_is_written(inputs, template, what):
    before = {k: tree_hash(v) for k, v in inputs.items() if k != "tmp"}
    res = cli(*template.format(**inputs).split(), code=2)
    line = error_line(res)
    assert "--out" in line and ("input" in line), line
    assert {k: tree_hash(v) for k, v in inputs.items() if k != "tmp"} == before  # nothing lost


def _pipeline(path: Path, **fields) -> Path:
    """A vacation pipeline file (valid as a file; the guard runs before its references are opened)."""
    import yaml

    pipe = {"pool": "synthetic", "model": "run", "eval": {"suites": ["night.yaml"]}, **fields}
    path.write_text(yaml.safe_dump(pipe))
    return path


# (pipeline fields, --out, what the run's outputs would destroy); paths relative to the test's folder
PIPELINE_OVERLAPS = [
    ({"pool": "data"}, "data", "the pool, as the run directory"),
    ({"pool": "data"}, "data/run", "inside the pool"),
    ({"model": "run"}, "run/checkpoints/vac", "inside the starting model's checkpoints"),
    ({"pool": "vac/iter_001/labels"}, "vac", "the pool inside iteration 1's labels"),
    ({"model": "vac/iter_002/train"}, "vac", "the model inside iteration 2's training run"),
    ({"train_config": "cfg.yaml"}, "cfg.yaml", "the train config"),
    ({"train_config": "cfg_data.yaml"}, "data", "a dataset of the train config"),
    ({"label": {"kind": "auto", "teacher": "vac/iter_001/train"}}, "vac", "the teacher"),
    ({"eval": {"suites": ["vac/history.html"]}}, "vac", "a suite where the history page goes"),
]


@pytest.mark.parametrize("fields,out,what", PIPELINE_OVERLAPS, ids=[w for _, _, w in PIPELINE_OVERLAPS])
def test_vacation_outputs_never_eat_what_its_pipeline_reads(inputs, fields, out, what):
    """The pipeline's own outputs (its run directory, each iteration's queue, labels, training run, export and
    the history files) are checked against the pool, model, configs, teacher and suites its file names."""
    tmp = inputs["tmp"]
    train_config(tmp / "cfg_data.yaml")
    tree = __import__("yaml").safe_load((tmp / "cfg_data.yaml").read_text())
    tree["data"]["datasets"] = {"d": {"kind": "shards", "path": str(inputs["data"])}}
    (tmp / "cfg_data.yaml").write_text(__import__("yaml").safe_dump(tree))
    for rel in ("vac/iter_001/labels", "vac/iter_002/train", "vac/iter_001/train"):
        shutil.copytree(inputs["data"] if "labels" in rel else inputs["run"], tmp / rel)
    (tmp / "vac" / "history.html").write_text("<html></html>")
    pipe = _pipeline(tmp / "pipeline.yaml", **fields)
    watched = [inputs["data"], inputs["run"], inputs["cfg"], tmp / "cfg_data.yaml", tmp / "vac"]
    before = [tree_hash(p) for p in watched]
    line = error_line(cli("vacation", "-c", pipe, "-o", tmp / out, "--iterations", "2", code=2))
    assert "--out" in line and "input" in line, line
    assert [tree_hash(p) for p in watched] == before  # nothing lost


def test_vacation_checks_the_datasets_of_the_models_own_training_config(inputs):
    """No ``train_config``: the pipeline trains on the datasets the model's checkpoint recorded (state.json)."""
    state_file = inputs["run"] / "checkpoints" / "step_00000001" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"] = {"data": {"datasets": {"d": {"kind": "shards", "path": str(inputs["data"])}}}}
    state_file.write_text(json.dumps(state))
    pipe = _pipeline(inputs["tmp"] / "pipeline.yaml", model=str(inputs["run"]))
    before = tree_hash(inputs["data"])
    line = error_line(cli("vacation", "-c", pipe, "-o", inputs["data"], code=2))
    assert "--out" in line and "is also an input" in line, line
    assert tree_hash(inputs["data"]) == before


def test_vacation_pipeline_file_inside_its_run_is_not_overwritten(inputs):
    run = inputs["tmp"] / "vac"
    run.mkdir()
    pipe = _pipeline(run / "pipeline.json", pool=str(inputs["data"]), model=str(inputs["run"]))
    line = error_line(cli("vacation", "-c", pipe, "-o", run, code=2))
    assert "its part" in line and "pipeline.json" in line, line


def test_train_output_is_checked_against_its_configs_datasets(inputs):
    import yaml

    cfg = inputs["tmp"] / "shards.yaml"
    tree = yaml.safe_load(inputs["cfg"].read_text())
    tree["data"]["datasets"] = {"d": {"kind": "shards", "path": str(inputs["data"])}}
    cfg.write_text(yaml.safe_dump(tree))
    before = tree_hash(inputs["data"])
    line = error_line(cli("train", "-c", cfg, "-o", inputs["data"], code=2))
    assert "--out" in line and "input" in line and str(inputs["data"]) in line, line
    assert tree_hash(inputs["data"]) == before


@pytest.mark.parametrize("template", [
    "convert shards --path {data} --out {tmp}/new --report {data}/manifest.json",
    "quantize {onnx} -o {tmp}/m.int8.onnx --json {onnx}",
    "quantize {onnx} -o {tmp}/m.int8.onnx --json {tmp}/m.int8.onnx",
], ids=["convert --report", "quantize --json", "quantize --json = -o"])
def test_side_outputs_never_overwrite_an_input(inputs, template):
    before = {k: tree_hash(v) for k, v in inputs.items() if k != "tmp"}
    line = error_line(cli(*template.format(**inputs).split(), code=2))
    assert "input" in line or "also the command's --out" in line, line
    assert {k: tree_hash(v) for k, v in inputs.items() if k != "tmp"} == before


def test_a_symlink_to_the_input_is_the_input(inputs):
    link = inputs["tmp"] / "alias"
    link.symlink_to(inputs["data"])
    before = tree_hash(inputs["data"])
    cli("convert", "shards", "--path", inputs["data"], "--out", link, "--overwrite", code=2)
    assert tree_hash(inputs["data"]) == before
    assert cli("data-info", inputs["data"], "--verify").exit_code == 0


def test_harmless_outputs_beside_or_inside_a_run_still_work(inputs):
    """The rule is not "never near an input": a report beside the run, a graph next to the fp32 one are fine."""
    check_output(inputs["run"] / "eval.json", [inputs["run"]])  # the run, not its checkpoints/
    check_output(inputs["onnx"].with_name("model.int8.onnx"), [inputs["onnx"]])
    check_output(inputs["run"], [inputs["cfg"], inputs["run"] / "config.yaml"])  # train --resume with its config


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth_in=st.integers(0, 2), depth_out=st.integers(0, 2), common=st.integers(0, 2),
       sealed=st.sampled_from(["dataset", "checkpoint", "plain", "file"]), replacing=st.booleans())
def test_check_output_refuses_exactly_what_could_destroy_an_input(tmp_path, depth_in, depth_out, common, sealed,
                                                                  replacing):
    """Any layout of an input and an output: refused iff out == input, out is inside a sealed input, or out
    holds the input and the command replaces what out holds."""
    root = tmp_path / f"case{depth_in}{depth_out}{common}{sealed}{int(replacing)}"
    shared = root.joinpath(*[f"c{i}" for i in range(common)])
    src = shared.joinpath(*[f"i{i}" for i in range(depth_in)]) if depth_in else shared
    out = shared.joinpath(*[f"o{i}" for i in range(depth_out)]) if depth_out else shared
    if sealed == "file":
        src = src / "input.bin"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(b"x")
    else:
        src.mkdir(parents=True, exist_ok=True)
        marker = {"dataset": "manifest.json", "checkpoint": "state.json", "plain": "notes.txt"}[sealed]
        (src / marker).write_text("{}")
    src_r, out_r = src.resolve(), out.resolve()
    inside_input = src_r == out_r or src_r in out_r.parents
    holds_input = src_r == out_r or out_r in src_r.parents
    expect = (src_r == out_r or (inside_input and sealed in ("dataset", "checkpoint"))
              or (holds_input and replacing))
    try:
        check_output(out, [src], replacing)
        refused = False
    except OutputError:
        refused = True
    assert refused == expect, (src, out, sealed, replacing)


def test_every_command_declares_its_kind_of_output():
    import typer

    from hydranet.cli import app

    for name, cmd in typer.main.get_command(app).commands.items():
        if any(p.name in ("out", "output") for p in cmd.params):
            assert name in DIRECTORY_OUTPUTS | FILE_OUTPUTS, f"{name}: add it to hydranet/cli/guard.py"


# One invocation of every command that writes a directory (a run, a dataset, a queue, a cache): a command
# added to DIRECTORY_OUTPUTS without an entry here fails test_every_directory_writer_is_tried_with_the_lock_held.
WRITERS = {
    "convert": "convert shards --path {data} --out {out}",
    "generate": "generate --config {world} --frames 1 -o {out}",
    "label": "label --queue {queue} --data {data} --out {out}",
    "train": "train -c {cfg} -o {out}",
    "vacation": "vacation --config {cfg} -o {out}",
    "cache-features": "cache-features --ckpt {run} --data {data} -o {out}",
    "merge": "merge {run} {run} -o {out}",
    "infer": "infer {onnx} --data {data} -o {out}",
    "mine": "mine --model {run} --data {data} --budget 1 -o {out}",
    "predict": "predict {run} --data {data} -o {out}",
    "demo": "demo -o {out}",
}


def _cli_commands() -> dict:
    import typer

    from hydranet.cli import app

    return dict(typer.main.get_command(app).commands)


def test_every_directory_writer_is_tried_with_the_lock_held():
    """Walk the CLI: every command passes through the guard, every command with an output declares whether it
    writes a directory (locked) or one file (atomic), and every directory writer is in WRITERS (so the test
    below proves it takes the lock)."""
    from hydranet.cli.guard import GuardedCommand

    commands = _cli_commands()
    for name, cmd in commands.items():
        assert isinstance(cmd, GuardedCommand), f"{name}: not a GuardedCommand (its writes would not be locked)"
    writers = {n for n, c in commands.items() if any(p.name in ("out", "output") for p in c.params)}
    assert writers <= DIRECTORY_OUTPUTS | FILE_OUTPUTS, writers - (DIRECTORY_OUTPUTS | FILE_OUTPUTS)
    assert not DIRECTORY_OUTPUTS & FILE_OUTPUTS
    assert set(WRITERS) == DIRECTORY_OUTPUTS & set(commands), set(WRITERS) ^ (DIRECTORY_OUTPUTS & set(commands))


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_second_writer_of_an_output_is_refused_naming_the_first(inputs, name):
    out = inputs["tmp"] / "busy"
    with output_lock(out):
        res = cli(*WRITERS[name].format(out=out, **inputs).split(), code=2)
    line = error_line(res)
    assert f"pid {os.getpid()}" in line and "in use by another hydranet process" in line, line
    assert not out.exists()  # the refused writer created nothing
    assert str(lock_file(out)) in line


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_under_torchrun_rank_0_holds_the_lock_for_the_job(inputs, name, monkeypatch):
    """Before: under torchrun no directory writer but ``train`` was locked, so two ``mine`` jobs (or a job and a
    single process) into one --out both exited 0. Rank 0 now takes the lock for its job; other ranks do not
    (they share the output with their rank 0)."""
    from hydranet.cli.guard import _lock_holder

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert _lock_holder()
    out = inputs["tmp"] / "busy"
    with output_lock(out):
        line = error_line(cli(*WRITERS[name].format(out=out, **inputs).split(), code=2))
    assert "in use by another hydranet process" in line, line
    monkeypatch.setenv("RANK", "1")
    assert not _lock_holder()


def test_train_without_out_is_guarded_at_the_run_directory_it_picks(inputs, monkeypatch):
    """``train -c cfg.yaml`` with no ``-o`` writes ``runs/cfg``: locked and checked like a given ``--out``."""
    monkeypatch.chdir(inputs["tmp"])
    with output_lock(Path("runs") / "cfg"):
        line = error_line(cli("train", "-c", inputs["cfg"], code=2))
    assert "in use by another hydranet process" in line and "runs/cfg" in line, line
    assert not (inputs["tmp"] / "runs" / "cfg").exists()


def test_two_torchrun_mine_jobs_into_one_queue_cannot_both_succeed(inputs):
    """A real two-rank torchrun ``mine`` whose --out another process writes: refused (exit != 0, naming the
    holder), its other rank stopped with it (no hang), nothing written."""
    import socket
    import subprocess
    import sys

    from faults_kit import REPO

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = inputs["tmp"] / "queue_out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "hydranet", "mine", "--model", str(inputs["run"]), "--data", str(inputs["data"]), "--budget", "1",
           # triggers this model has heads for: the lock must be the command's only fault (rank 1 takes no lock and
           # would otherwise fail on the default light trigger first, and torchrun end rank 0 before it says why)
           "--triggers", "entropy:task=drivable", "--html-frames", "0", "-o", str(out)]
    with output_lock(out):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode != 0, res.stderr
    assert f"pid {os.getpid()}" in res.stderr and "in use by another hydranet process" in res.stderr, res.stderr
    assert not (out / "queue.jsonl").exists()


def test_two_writers_at_once_one_wins_and_the_result_verifies(tmp_path):
    """Two real processes generate into one folder at the same instant: one writes, the other is refused;
    the dataset verifies. Then the winner is killed -9 mid-write: its lock dies with it, a re-run finishes."""
    ctx = forkserver()
    out = tmp_path / "shared"
    procs = [ctx.Process(target=child_generate, args=(str(out), 6)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(p.exitcode for p in procs) == [0, 1]  # the loser raised OutputLockedError
    assert cli("data-info", out, "--verify").exit_code == 0
    assert not lock_file(out).exists()  # a finished writer leaves no lock file behind

    victim = ctx.Process(target=child_generate, args=(str(tmp_path / "killed"), 40))
    victim.start()
    deadline = time.time() + 60
    while not list(tmp_path.glob(".tmp-killed-*/shard-*.tar")) and time.time() < deadline:  # its stage
        time.sleep(0.05)
    victim.kill()
    victim.join()
    assert not (tmp_path / "killed").exists()  # half a dataset never carries the output's name
    child = ctx.Process(target=child_generate, args=(str(tmp_path / "killed"), 2))
    child.start()
    child.join(120)
    assert child.exitcode == 0  # the dead holder's lock did not outlive it
    assert cli("data-info", tmp_path / "killed", "--verify").exit_code == 0
    assert leftovers(tmp_path) == []  # the next writer deleted the dead one's stage


# ---- predict and infer: a fresh directory, whole or not at all (hydranet.outputs.staged_directory) ----------

PREDICTORS = {"predict": "predict {run} --data {data}", "infer": "infer {onnx} --data {data}"}


def _predictor(name: str, inputs: dict, out: Path, *extra: str, code: int) -> Any:
    return cli(*PREDICTORS[name].format(**inputs).split(), "-o", out, *extra, code=code)


def _damage_sample(data: Path, i: int) -> None:
    """Overwrite bytes in the middle of sample ``i``'s first member: opening the dataset succeeds, reading
    sample ``i`` fails its CRC32 (``ShardError``, exit 2)."""
    shard, (_, offset, length, _) = data / "shard-000000.tar", read_manifest(data).shards[0].index[i]
    with shard.open("r+b") as f:
        f.seek(offset + length // 2)
        f.write(b"\xff" * 64)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_an_earlier_prediction_output_is_refused_then_replaced_whole_with_overwrite(inputs, name):
    """Before: a 1-frame run into a folder of an earlier 2-frame run printed "wrote 1 frames" and left the old
    frame_0001.png/.npz beside a predictions.json listing one frame; the console named no .npz."""
    out = inputs["tmp"] / "pred"
    first = _predictor(name, inputs, out, code=0)
    assert "predictions.json, 2 frame_XXXX.png, 2 frame_XXXX.npz" in first.output, first.output
    before = tree_hash(out)
    line = error_line(_predictor(name, inputs, out, "--frames", "1", code=2))
    assert f"--out {out} already exists and is not empty" in line and "--overwrite" in line, line
    assert tree_hash(out) == before
    # A file of the user's own in the earlier output is never deleted by a replace (before: it vanished), even one
    # named like an output that predictions.json does not list; nor is --overwrite suggested for it.
    for own in ("notes.txt", "frame_0007.png"):
        (out / own).write_text("mine")
        for flags in ((), ("--overwrite",)):
            line = error_line(_predictor(name, inputs, out, "--frames", "1", *flags, code=2))
            assert f"also holds files this command did not write ({own}); --overwrite would delete them" in line
        (out / own).unlink()
    _predictor(name, inputs, out, "--frames", "1", "--overwrite", code=0)
    assert sorted(p.name for p in out.iterdir()) == ["frame_0000.npz", "frame_0000.png", "predictions.json"]
    assert len(json.loads((out / "predictions.json").read_text())["frames"]) == 1
    assert leftovers(inputs["tmp"]) == []


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_overwrite_replaces_only_an_earlier_prediction_output(inputs, name):
    """Before: ``--out`` naming a shard dataset (not the one read) was written into without any flag. Now it is
    refused, and ``--overwrite`` does not delete it either: it holds no predictions.json."""
    other = shutil.copytree(inputs["data"], inputs["tmp"] / "other")
    before = tree_hash(other)
    # Without the flag the error does not suggest --overwrite, which could not replace it either (the trial's
    # finding: "pass --overwrite", then "--overwrite replaces only ...").
    for flags in ((), ("--overwrite",)):
        line = error_line(_predictor(name, inputs, other, *flags, code=2))
        assert f"--out {other} already exists and holds no predictions.json, so it is not an earlier output" in line
        assert "choose another --out" in line, line
    assert tree_hash(other) == before
    empty = inputs["tmp"] / "empty"
    empty.mkdir()
    _predictor(name, inputs, empty, "--frames", "1", code=0)  # an empty folder needs no flag
    assert (empty / "predictions.json").is_file()


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_a_failure_mid_run_leaves_no_output_and_the_earlier_one_intact(inputs, name):
    """Before: a corrupt shard stopped predict at its sample and left the frames before it, with no
    predictions.json, under the output's name."""
    bad = shutil.copytree(inputs["data"], inputs["tmp"] / "bad")
    _damage_sample(bad, 1)  # frame 0 is drawn and written before sample 1 fails
    broken = dict(inputs, data=bad)
    fresh = inputs["tmp"] / "fresh"
    line = error_line(_predictor(name, broken, fresh, code=2))
    assert "shard-000000.tar" in line and "000000001" in line, line
    assert not fresh.exists() and leftovers(inputs["tmp"]) == []
    earlier = inputs["tmp"] / "earlier"
    _predictor(name, inputs, earlier, code=0)
    before = tree_hash(earlier)
    _predictor(name, broken, earlier, "--overwrite", code=2)
    assert tree_hash(earlier) == before and leftovers(inputs["tmp"]) == []


def test_staged_directory_appears_whole_or_not_at_all(tmp_path):
    """Ctrl-C inside the block keeps the old output; success replaces it, through a symlink where it points;
    a file in the way is refused even with overwrite."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "predictions.json").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(KeyboardInterrupt), staged_directory(link, overwrite=True, marker="predictions.json") as d:
        (d / "predictions.json").write_text("half")
        raise KeyboardInterrupt
    assert (real / "predictions.json").read_text() == "old" and leftovers(tmp_path) == []
    with staged_directory(link, overwrite=True, marker="predictions.json") as d:
        (d / "predictions.json").write_text("new")
    assert link.is_symlink() and (real / "predictions.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"), staged_directory(tmp_path / "file", True):
        pass


def test_a_writer_killed_mid_way_is_put_right_by_the_next_one(tmp_path):
    """kill -9 between moving the old output aside and renaming the new one into place: the next writer of the
    output moves the old one back (never deletes it) and drops the dead writer's stage; a live writer's stage
    is left alone."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".tmp-out-{pid}.old").mkdir()
    (tmp_path / f".tmp-out-{pid}.old" / "predictions.json").write_text("old")
    (tmp_path / f".tmp-out-{pid}").mkdir()
    (tmp_path / f".tmp-out-{pid}" / "predictions.json").write_text("half")
    live = tmp_path / f".tmp-out-{os.getppid()}"
    live.mkdir()
    with pytest.raises(OutputError, match="already exists and is not empty"), staged_directory(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "predictions.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "out"]


# ---- shard datasets (convert, generate, label): replaced only by a complete one (hydranet.data.ShardWriter) --


def _fleet(root: Path, bad_line: int | None = None, lines: int = 3) -> Path:
    """A frames JSONL of ``lines`` frames; ``bad_line`` (1-based) gets a K for another resolution."""
    from faults_kit import T_CAM, frame_line, write_frames

    bad_k = [[40.0, 0.0, 100.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]]  # cx = 100 on a 48-wide image
    rows = [frame_line(i) if i + 1 != bad_line else
            frame_line(i, cameras={"front": {"image": f"img{i}.png", "K": bad_k, "T_ego_from_cam": T_CAM}})
            for i in range(lines)]
    return write_frames(root, rows)


def test_a_failed_convert_keeps_the_earlier_dataset_byte_for_byte(tmp_path):
    """Before: ``convert --overwrite`` into a folder holding a good dataset deleted its manifest and shards
    first, so a bad K on line 3 left the folder empty; a failed first conversion left an empty folder."""
    out = tmp_path / "fl"
    cli("convert", "frames", "--index", _fleet(tmp_path / "good"), "--out", out, "--shard-size", "1", code=0)
    before = tree_hash(out)
    bad = _fleet(tmp_path / "bad", bad_line=3)
    line = error_line(cli("convert", "frames", "--index", bad, "--out", out, "--shard-size", "1", "--overwrite",
                          code=2))
    assert "frames.jsonl:3" in line and "principal point" in line, line
    assert tree_hash(out) == before and leftovers(tmp_path) == []
    cli("data-info", out, "--verify", "--deep", code=0)
    cli("convert", "frames", "--index", bad, "--out", tmp_path / "first", "--shard-size", "1", code=2)
    assert not (tmp_path / "first").exists() and leftovers(tmp_path) == []
    short = _fleet(tmp_path / "short", lines=1)
    cli("convert", "frames", "--index", short, "--out", out, "--shard-size", "1", "--overwrite", code=0)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-000000.tar"]  # nothing old left
    assert read_manifest(out).num_samples == 1 and leftovers(tmp_path) == []


@pytest.mark.parametrize("flag", ["--overwrite", "--force"])
def test_an_interrupted_generate_keeps_the_earlier_dataset_byte_for_byte(tmp_path, monkeypatch, flag):
    """Ctrl-C on the third frame of ``generate --overwrite`` (``--force``: the same option's old spelling)
    leaves the earlier dataset as it was; the same run finished replaces it whole."""
    import importlib

    generate = importlib.import_module("hydranet.world.generate")  # the module (the package exports its function)
    world = world_file(tmp_path / "w.yaml")
    out = tmp_path / "data"
    cli("generate", "--config", world, "--frames", "2", "--shard-size", "1", "-o", out, code=0)
    before = tree_hash(out)
    encode = generate._encode

    def interrupted(w: Any, i: int, fmt: str) -> Any:
        if i == 2:
            raise KeyboardInterrupt
        return encode(w, i, fmt)

    monkeypatch.setattr(generate, "_encode", interrupted)
    res = cli("generate", "--config", world, "--frames", "4", "--shard-size", "1", "-o", out, flag, code=130)
    assert tree_hash(out) == before and leftovers(tmp_path) == [], res.output
    monkeypatch.undo()
    cli("generate", "--config", world, "--frames", "3", "--shard-size", "2", "-o", out, flag, code=0)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-000000.tar", "shard-000001.tar"]
    assert read_manifest(out).num_samples == 3 and leftovers(tmp_path) == []


def test_a_failed_label_keeps_the_earlier_labels(tmp_path, dataset):
    """A queue whose second row names another frame stops ``label --overwrite`` after one frame was written:
    the labels bought earlier stay as they were, and a first run leaves no folder."""
    from hydranet.data import ShardDataset

    ds = ShardDataset(dataset)
    ids = [f"{ds[i].scene_id}#{ds[i].frame_index}" for i in range(2)]
    queue = tmp_path / "q" / "queue.jsonl"
    queue.parent.mkdir()
    rows = [{"rank": r + 1, "index": i, "frame_id": ids[i]} for r, i in enumerate((0, 1))]
    queue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "labels"
    cli("label", "--queue", queue, "--data", dataset, "--out", out, code=0)
    assert sorted(p.name for p in out.iterdir()) == ["labels.jsonl", "manifest.json", "shard-000000.tar"]
    before = tree_hash(out)
    rows[1]["frame_id"] = "elsewhere#9"
    queue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = error_line(cli("label", "--queue", queue, "--data", dataset, "--out", out, "--overwrite", code=2))
    assert "elsewhere#9" in line, line
    assert tree_hash(out) == before and leftovers(tmp_path) == []
    cli("label", "--queue", queue, "--data", dataset, "--out", tmp_path / "first", code=2)
    assert not (tmp_path / "first").exists() and leftovers(tmp_path) == []


def test_cache_features_on_a_corrupt_shard_leaves_no_output_directory(inputs):
    """Before: the failure left an empty --out directory behind, carrying the output's name."""
    bad = shutil.copytree(inputs["data"], inputs["tmp"] / "bad_cache_data")
    _damage_sample(bad, 1)
    out = inputs["tmp"] / "cache_out"
    line = error_line(cli("cache-features", "--ckpt", inputs["run"], "--data", bad, "-o", out, code=2))
    assert "shard-000000.tar" in line, line
    assert not out.exists() and leftovers(inputs["tmp"]) == []


# Commands refused on bad input after the guard took the lock beside their --out (the lock's folder is --out's parent).
REFUSED = {
    "train": ["train", "--config", "{tmp}/bad.yaml", "-o", "{out}"],
    "cache-features": ["cache-features", "--ckpt", "{tmp}/nope", "--data", "synthetic", "-o", "{out}"],
    "merge": ["merge", "{tmp}/nope", "{tmp}/nope:objects3d", "-o", "{out}"],
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_command_leaves_none_of_the_folders_it_created(tmp_path, name):
    """Before: a refused ``train -o a/b/c`` (a bad config), ``cache-features`` or ``merge`` (no such checkpoint)
    left ``a/b/`` behind, created for the output's lock. A folder that existed before stays, even empty."""
    (tmp_path / "bad.yaml").write_text("trian: {steps: 1}\n")
    kept = tmp_path / "kept"
    kept.mkdir()
    for out, created in ((tmp_path / "a" / "b" / "c", tmp_path / "a"), (kept / "b" / "c", kept / "b")):
        line = error_line(cli(*[a.format(tmp=tmp_path, out=out) for a in REFUSED[name]], code=2))
        assert "bad.yaml" in line or "nope" in line, line
        assert not created.exists(), f"{name} left {created}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "kept"] and not any(kept.iterdir())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_directory_output_that_is_a_file_is_refused_in_one_line(tmp_path, name):
    """Before: ``train -o FILE`` said ``[Errno 17] File exists: 'FILE'``. The file is left as it was."""
    (tmp_path / "bad.yaml").write_text("trian: {steps: 1}\n")
    file = tmp_path / "file"
    file.write_text("mine")
    res = cli(*[a.format(tmp=tmp_path, out=file) for a in REFUSED[name]], code=2)
    assert " ".join(error_line(res).split()) == f"error: --out {file}: is a file; give a folder"
    below = cli(*[a.format(tmp=tmp_path, out=file / "run") for a in REFUSED[name]], code=2)
    assert " ".join(error_line(below).split()) == f"error: --out {file / 'run'}: {file} is a file, not a folder"
    assert file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "file"]


REPORTS = {  # one-file commands writing a report, given a checkpoint that does not exist; an earlier report of each
    "eval": (["eval", "{tmp}/nope", "-o", "{out}"], "a JSON report hydranet eval wrote",
             '{"checkpoint": "run", "suites": {}, "passed": true}\n'),
    "gate": (["gate", "--baseline", "{tmp}/nope", "--candidate", "{tmp}/nope", "-o", "{out}"],
             "a JSON report hydranet gate wrote", '{"baseline": "a", "candidate": "b", "passed": true}\n'),
    "report": (["report", "{tmp}/nope", "-o", "{out}"], "an HTML report hydranet report wrote",
               "<!DOCTYPE html><html><head><title>hydranet evaluation report</title></head></html>\n"),
}
USERS_FILES = {"notes.txt": "my notes\n", "frames.jsonl": '{"timestamp": 0.0}\n', "settings.json": '{"a": 1}\n',
               "index.html": "<!DOCTYPE html><html><title>my page</title></html>\n"}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_a_report_replaces_only_an_earlier_report_of_its_command(tmp_path, name):
    """Before: ``eval -o notes.txt`` replaced the user's notes with its JSON, and a first check by the first bytes
    let ``-o frames.jsonl`` (any file starting with ``{``) or a user's web page through. An existing file is replaced
    only when it is a report the same command wrote (its keys); anything else is refused, untouched."""
    args, kind, earlier = REPORTS[name]
    for file, text in USERS_FILES.items():
        mine = tmp_path / file
        mine.write_text(text)
        line = error_line(cli(*[a.format(tmp=tmp_path, out=mine) for a in args], code=2))
        assert f"--out {mine} exists and is not {kind}" in " ".join(line.split()), line
        assert mine.read_text() == text
    for other, (_, _, its_report) in REPORTS.items():  # another command's report is not this one's either
        if other != name:
            theirs = tmp_path / f"{other}.out"
            theirs.write_text(its_report)
            line = error_line(cli(*[a.format(tmp=tmp_path, out=theirs) for a in args], code=2))
            assert "exists and is not" in line and theirs.read_text() == its_report
    report = tmp_path / "earlier"
    report.write_text(earlier)
    line = error_line(cli(*[a.format(tmp=tmp_path, out=report) for a in args]))
    assert "nope" in line and "exists and is not" not in line, line  # past the output check, to the checkpoint
