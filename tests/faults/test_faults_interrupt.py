"""Class 8 of issue 22: a full disk, Ctrl-C, SIGTERM or kill -9 never leaves a half-written output or loses
the training since the last checkpoint.

- Ctrl-C / SIGTERM during ``train``: the step finishes, a checkpoint is saved, the resume command printed,
  exit 130 / 143 (``hydranet.train.interrupt``).
- kill -9 or a signal at any instant: the run resumes from a valid checkpoint; the output lock died with
  the process.
- A sample that cannot be decoded inside a DataLoader worker ends the run (exit 2, the worker's own message),
  though the workers ignore the stop signals: the trainer ends them itself (``interrupt.ending_workers``).
- A full disk (a small tmpfs, or ``RLIMIT_FSIZE`` where no tmpfs can be mounted): exit 1, one line saying
  "disk full" and naming the file, and no ``.tmp-*`` left (``hydranet.cli.guard``, ``outputs.atomic_path``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import pytest
import yaml
from faults_kit import (
    REPO,
    child_train,
    cli,
    error_line,
    forkserver,
    full_disk,
    hydranet_cmd,
    leftovers,
    limit_file_size,
    make_dataset,
    train_config,
    world_file,
)

from hydranet.checkpoint import load_latest_valid


def wait_for_steps(run: Path, steps: int, timeout: float = 120) -> None:
    log = run / "train_log.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.is_file() and log.read_text().count("\n") >= steps:
            return
        time.sleep(0.05)
    raise AssertionError(f"{log}: fewer than {steps} steps after {timeout} s")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_train_saves_and_prints_the_resume_command(tmp_path, sig, code):
    """As a terminal's Ctrl-C does, the signal goes to the whole process group: DataLoader workers too."""
    cfg = train_config(tmp_path / "c.yaml", steps=100_000, num_workers=1)
    run = tmp_path / "run"
    proc = subprocess.Popen(hydranet_cmd("train", "-c", cfg, "-o", run, "--no-progress"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_steps(run, 2)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.count(f"resume with: hydranet train --resume -o {run}") == 1  # once: in the error line
    ckpt, note = load_latest_valid(run / "checkpoints", quarantine=False)
    saved = int(ckpt.state["step"])
    assert note is None and saved >= 2  # every step up to the signal kept, not just the last ckpt_every
    assert saved == sum(1 for _ in (run / "train_log.jsonl").open())
    res = cli("train", "--resume", "-o", run, "--set", f"train.steps={saved + 1}", "--no-progress", code=0)
    assert f"resumed at step {saved}" in res.output and "resuming with a changed config: train.steps" in res.output


def test_a_signal_to_a_torchrun_job_is_one_error_line_and_leaves_no_lock(tmp_path):
    """Before: rank 1 printed its own line, "checkpoint None saved", and every torchrun run, even a finished one,
    left ``.run.lock`` and ``.run.lock.pid`` behind (the workers' ``os._exit`` skipped the lock's clean-up)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = train_config(tmp_path / "c.yaml", steps=100_000)
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
                "-m", "hydranet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*torchrun, "train", "-c", str(cfg), "-o", str(run), "--no-progress"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_steps(run, 2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted by SIGINT" in errors[0], err[-3000:]
    assert "checkpoint None" not in err and f"{run}/checkpoints/step_" in errors[0]
    assert not [p.name for p in tmp_path.iterdir() if ".lock" in p.name]
    saved = int(load_latest_valid(run / "checkpoints", quarantine=False)[0].state["step"])
    res = subprocess.run([*torchrun, "train", "--resume", "-o", str(run), "--set", f"train.steps={saved + 1}",
                          "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not [p.name for p in tmp_path.iterdir() if ".lock" in p.name]


def damage_consistently(shard: Path, member: str) -> None:
    """Overwrite the middle of ``member`` and record the new bytes' CRC-32 and sha256 in the manifest: a
    member that passes every integrity check and still does not decode (a writer's bug, not bit rot)."""
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    raw = bytearray(shard.read_bytes())
    raw[info.offset_data + info.size // 2: info.offset_data + info.size // 2 + 64] = b"\xff" * 64
    shard.write_bytes(bytes(raw))
    manifest_path = shard.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["shards"] if e["name"] == shard.name)
    entry["sha256"] = hashlib.sha256(raw).hexdigest()
    for row in entry["index"]:  # [key, offset, length, crc32]
        row[3] = zlib.crc32(raw[row[1]:row[1] + row[2]])
    manifest_path.write_text(json.dumps(manifest))


def test_a_sample_that_fails_to_decode_in_a_loader_worker_ends_training(tmp_path):
    """Workers ignore SIGTERM (a signal to the process group must not kill them mid-step), so a run whose loader
    raised must end its workers itself: it used to print the worker's traceback and then wait forever."""
    data = make_dataset(tmp_path / "d", frames=4)
    damage_consistently(data / "shard-000000.tar", "000000002.cam.main.npz")
    cfg = train_config(tmp_path / "c.yaml", steps=4, num_workers=1)
    config = yaml.safe_load(cfg.read_text())
    config["data"] = {"datasets": {"d": {"kind": "shards", "path": str(data)}}}
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run(hydranet_cmd("train", "-c", cfg, "-o", tmp_path / "run", "--no-progress"), cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("error: ") and "sample 000000002: member 'cam.main.npz' cannot be decoded" in errors[0]
    assert errors[0].endswith("(in DataLoader worker 0)") and "worker.py" not in errors[0]


@pytest.mark.parametrize("kill", ["SIGKILL@startup", "SIGKILL@step", "SIGINT@startup", "SIGINT@step", "SIGTERM@step"])
def test_a_run_killed_at_any_instant_resumes_from_a_valid_checkpoint(tmp_path, kill):
    """A killed run leaves either no checkpoint or a valid one, never a lock or a corrupt pointer."""
    how, when = kill.split("@")
    cfg = train_config(tmp_path / "c.yaml", steps=100_000, ckpt_every=2)
    run = tmp_path / "run"
    child = forkserver().Process(target=child_train, args=(str(cfg), str(run), False))
    child.start()
    try:
        if when == "step":
            wait_for_steps(run, 3)
        elif how == "SIGKILL":
            time.sleep(0.3)
        else:
            # "Startup": the run exists (its config.yaml is written, so --resume has a run to continue) and no
            # step has been taken; a SIGINT while the forkserver child is still being set up would test
            # multiprocessing, not hydranet.
            deadline = time.time() + 120
            while not (run / "config.yaml").exists() and time.time() < deadline and child.is_alive():
                time.sleep(0.02)
        os.kill(child.pid, getattr(signal, how))
        child.join(120)
        assert child.exitcode is not None
    finally:
        if child.is_alive():
            child.kill()
    ckpt, note = load_latest_valid(run / "checkpoints", quarantine=False)
    assert note is None  # never a corrupt newest checkpoint
    if how != "SIGKILL" and when == "step":
        assert int(ckpt.state["step"]) == sum(1 for _ in (run / "train_log.jsonl").open())  # saved on the signal
    steps = int(ckpt.state["step"]) + 1 if ckpt is not None else 1
    res = cli("train", "--resume", "-o", run, "--set", f"train.steps={steps}", "--no-progress", code=0)
    assert "in use" not in res.output


def _commands(tmp_path: Path, full: Path, ckpt: Path, dataset: Path, graph: Path) -> dict[str, list]:
    suite = tmp_path / "s.yaml"
    suite.write_text("scenarios: {a: {}}\nseeds: [0, 1]\nframes: 1\ntasks: {drivable: {}}\n")
    return {
        "export": ["export", ckpt, "-o", full / "model.onnx"],
        "quantize": ["quantize", graph, "-o", full / "model.int8.onnx", "--calib-frames", "1", "--eval-frames", "0"],
        "report": ["report", ckpt, "--suite", suite, "-o", full / "report.html", "--samples", "1", "--device", "cpu"],
        "generate": ["generate", "--config", world_file(tmp_path / "w.yaml"), "--frames", "2", "-o", full / "data"],
        "convert": ["convert", "shards", "--path", dataset, "--out", full / "conv"],
        "infer": ["infer", graph, "--data", dataset, "-o", full / "infer"],
        "predict": ["predict", ckpt, "--data", dataset, "-o", full / "predict"],
        "show": ["show", "--data", dataset, "-o", full / "show.png"],
        "train": ["train", "-c", train_config(tmp_path / "c.yaml"), "-o", full / "run", "--no-progress"],
    }


@pytest.mark.parametrize("command", ["export", "quantize", "report", "generate", "convert", "infer", "predict", "show",
                                     "train"])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(tmp_path, ckpt, dataset, graph,
                                                                                 command):
    with full_disk() as (full, kind):
        args = _commands(tmp_path, full, ckpt, dataset, graph)[command]
        if kind == "tmpfs":
            res = cli(*args, code=1)
            line = error_line(res)
            assert str(full) in line and (line.startswith("error: disk full: could not write ") or (
                command == "train" and "could not write the checkpoint (No space left on device)" in line)), line
        else:  # no tmpfs: the same through a per-process file size limit (EFBIG), in a child process
            proc = subprocess.run(hydranet_cmd(*args), cwd=REPO, capture_output=True, text=True,
                                  preexec_fn=lambda: limit_file_size(4))
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
            assert "file too large" in proc.stderr and str(full) in proc.stderr
        assert leftovers(full) == []
        assert not list(full.rglob("manifest.json"))  # no dataset or graph that looks complete


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """Training whose later checkpoint hits a full disk: exit 1, and the earlier checkpoint still loads."""
    with full_disk(size_kb=4096, free_kb=4096) as (full, kind):
        if kind != "tmpfs":
            pytest.skip("needs a tmpfs")
        run = full / "run"
        cli("train", "-c", train_config(tmp_path / "c.yaml", steps=1), "-o", run, "--no-progress", code=0)
        first = json.loads((run / "checkpoints" / "latest.json").read_text())["checkpoint"]
        (full / "fill").write_bytes(b"\0" * (4096 * 1024 - sum(p.stat().st_size for p in full.rglob("*")
                                                               if p.is_file()) - 64 * 1024))
        res = cli("train", "--resume", "-o", run, "--set", "train.steps=3", "--no-progress", code=1)
        assert "could not write the checkpoint" in error_line(res) or "disk full" in error_line(res)
        ckpt, note = load_latest_valid(run / "checkpoints", quarantine=False)
        assert ckpt is not None and ckpt.path.name == first and note is None
        assert leftovers(run) == []
