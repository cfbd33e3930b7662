"""Shared pieces of the fault-injection suite: tiny inputs, a CLI runner that checks the error convention,
a full disk, and processes that can be killed mid-write without paying for a fresh ``import torch``.

Everything is sized to run in seconds on 2 cores: 32x64 images, a 16 m x 16 m BEV grid at 1 m, the tiny
preset with two tasks.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from typer.testing import CliRunner

GRID = {"x_range": [-8.0, 8.0], "y_range": [-8.0, 8.0], "cell": 1.0}
SETUP = {"image_size": [32, 64], "grid": GRID}  # the default 8-camera rig at 32x64, a 16 m grid at 1 m
SCENES = {"seed": 3, "num_scenes": 2, "frames_per_scene": 2, "lighting": "day", "fog": 0.0}
WORLD = {**SCENES, "setup": SETUP}  # a world file of its own: it says what it renders
TASKS = ("drivable", "depth", "bev_semantic")
REPO = Path(__file__).resolve().parents[2]


def train_config(path: Path, steps: int = 2, **train: Any) -> Path:
    """A training config of the tiny model on 4 world frames, written to ``path``."""
    cfg = {"data": {"datasets": {"w": {"kind": "world", "frames": 4, "world": SCENES}}},  # the model's setup
           "model": {"preset": "tiny", "setup": SETUP, "trunk": {"name": "regnet_tiny"},
                     "tasks": {t: {} for t in TASKS}},
           "train": {"steps": steps, "batch_size": 1, "warmup_steps": 1, "threads": 1, "log_every": 1, **train}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def world_file(path: Path, **fields: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**WORLD, **fields}))
    return path


def make_checkpoint(path: Path, grid: dict | None = None, tasks: tuple[str, ...] = TASKS) -> Path:
    """An untrained tiny checkpoint (a run directory with ``checkpoints/step_00000001``)."""
    import torch

    from hydranet.checkpoint import save_checkpoint
    from hydranet.model import ModelConfig, create_model

    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={**SETUP, "grid": grid or GRID}, tasks={t: {} for t in tasks})
    cfg.trunk.name = "regnet_tiny"
    model = create_model(cfg)
    save_checkpoint(path / "checkpoints" / "step_00000001", model,
                    {"model_config": model.cfg.model_dump(mode="json"), "config": {}, "step": 1})
    return path


def make_dataset(path: Path, frames: int = 2, **world: Any) -> Path:
    from hydranet.world.config import WorldConfig
    from hydranet.world.generate import generate

    generate(path, WorldConfig(**{**WORLD, **world}), frames=frames)
    return path


# ---- hostile inputs of each converter (frames, KITTI, BDD100K), honest unless a test says otherwise ----

H, W = 24, 48
K = [[40.0, 0.0, 24.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]]
T_CAM = [[0.0, 0.0, 1.0, 1.5], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.4], [0.0, 0.0, 0.0, 1.0]]
EYE = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]


def frame_line(index: int = 0, **over) -> dict:
    line = {"scene_id": "s", "frame_index": index, "timestamp": 0.1 * index, "T_world_from_ego": EYE,
            "cameras": {"front": {"image": f"img{index}.png", "K": K, "T_ego_from_cam": T_CAM}},
            "labels": {"detection2d": {"boxes": [[2, 3, 20, 15]], "classes": ["car"], "camera": ["front"]},
                       "objects3d": {"boxes": [[10, 0, 0.8, 4.5, 1.9, 1.6, 0.0]], "classes": ["car"]}}}
    for key, value in over.items():
        if key == "labels":
            line["labels"] = {**line["labels"], **value}
        else:
            line[key] = value
    return line


def write_frames(root: Path, lines: list) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(len(lines)):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(root / f"img{i}.png")
    index = root / "frames.jsonl"
    index.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return index


def write_kitti(root: Path, R0: np.ndarray, velodyne: bytes | None = None) -> Path:
    for sub in ("image_2", "calib", "label_2", "velodyne"):
        (root / "training" / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "training" / "image_2" / "000001.png")
    P2 = "40 0 24 0 0 40 12 0 0 0 1 0"
    Tr = "0 -1 0 0 0 0 -1 -0.08 1 0 0 -0.27"
    (root / "training" / "calib" / "000001.txt").write_text(
        f"P2: {P2}\nR0_rect: {' '.join(str(float(x)) for x in R0.flatten())}\nTr_velo_to_cam: {Tr}\n")
    (root / "training" / "label_2" / "000001.txt").write_text(
        "Car 0.0 0 0.0 5 5 30 20 1.5 1.6 4.0 1.0 1.7 15.0 0.0\n")
    if velodyne is not None:
        (root / "training" / "velodyne" / "000001.bin").write_bytes(velodyne)
    return root


def write_bdd(root: Path, frames: list[dict], mask_hw: tuple[int, int] | None = None) -> Path:
    (root / "images" / "100k" / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "100k" / "val" / "a.jpg")
    det = root / "labels" / "det_20"
    det.mkdir(parents=True)
    (det / "det_val.json").write_text(json.dumps(frames))
    if mask_hw is not None:
        masks = root / "labels" / "drivable" / "masks" / "val"
        masks.mkdir(parents=True)
        Image.fromarray(np.zeros(mask_hw, np.uint8)).save(masks / "a.png")
    return root


# ---- the CLI ----------------------------------------------------------------------------------------

_runner = CliRunner()


def cli(*args: Any, code: int | None = None) -> Any:
    """Run ``hydranet ARGS`` in-process. Every result keeps the convention: no traceback, and bad input is
    one ``error:`` line (or click's usage error); ``code`` is the exit code expected."""
    from hydranet.cli import app

    res = _runner.invoke(app, [str(a) for a in args])
    out = res.output
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.exception, out)
    if res.exit_code not in (0, 1):  # 1 may be a check that failed, reported by its own table
        errors = [ln for ln in out.splitlines() if ln.startswith("error:") or "Error:" in ln]
        assert errors, out
    if code is not None:
        assert res.exit_code == code, (res.exit_code, out)
    return res


def error_line(res: Any) -> str:
    """The one ``error: ...`` line of a failed command (whitespace joined, box drawing removed)."""
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def hydranet_cmd(*args: Any) -> list[str]:
    return [sys.executable, "-m", "hydranet", *[str(a) for a in args]]


# ---- a full disk ------------------------------------------------------------------------------------


@contextlib.contextmanager
def full_disk(size_kb: int = 64, free_kb: int = 4) -> Iterator[tuple[Path, str]]:
    """A directory on a filesystem with only ``free_kb`` left: a ``size_kb`` tmpfs (we run as root in CI),
    else a plain temporary directory whose writers get ``RLIMIT_FSIZE`` (``EFBIG``) instead of ``ENOSPC``.
    Yields ``(directory, kind)`` with kind ``"tmpfs"`` or ``"rlimit"``."""
    base = Path(tempfile.mkdtemp(prefix="hydranet-full-"))
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(base)], capture_output=True).returncode == 0
    try:
        if mounted:
            (base / ".filler").write_bytes(b"\0" * ((size_kb - free_kb) * 1024))
            yield base, "tmpfs"
        else:
            yield base, "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(base)], capture_output=True)
        subprocess.run(["rm", "-rf", str(base)], capture_output=True)


def limit_file_size(kb: int) -> None:
    """``preexec_fn``: files this process writes may not grow past ``kb`` KiB (``EFBIG``, not a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (kb * 1024, kb * 1024))


def leftovers(folder: Path) -> list[str]:
    """Temporary files anywhere under ``folder`` (what a failed writer must not leave)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.startswith(".tmp-") or p.name.endswith(".tmp"))


# ---- processes to kill --------------------------------------------------------------------------------

_ctx: Any = None


def forkserver() -> Any:
    """A ``forkserver`` multiprocessing context whose server has hydranet imported: a child starts in
    ~50 ms instead of the seconds ``import torch`` takes, and never inherits the test's threads."""
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(["faults_kit", "hydranet.world.generate", "hydranet.train.run",
                                     "hydranet.data.convert"])
    return _ctx


def child_generate(out: str, frames: int) -> None:
    """Body of a killable child: ``generate`` into ``out``, holding the output lock as the CLI does."""
    import torch

    from hydranet.outputs import output_lock
    from hydranet.world.config import WorldConfig
    from hydranet.world.generate import generate

    torch.set_num_threads(1)
    with output_lock(out):
        generate(out, WorldConfig(**WORLD), frames=frames, shard_size=2)


def child_train(config: str, out: str, resume: bool) -> None:
    """Body of a killable child: ``run_training`` of ``config`` into ``out``, with SIGINT handled as in a
    terminal's foreground process. A process started from a background, non-interactive shell (as CI may run
    the suite) inherits SIGINT ignored, and Python keeps it ignored: a Ctrl-C the test sends before training
    installs its own handler would then be dropped, which is right for such a process but not what the test
    simulates."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from hydranet.train.config import load_config
    from hydranet.train.run import run_training

    run_training(load_config(config), out, resume=resume, progress=False)
