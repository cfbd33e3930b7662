"""Shared pieces of the sub-graph tests: a tiny two-camera world config, checkpoints as `hydranet train`
writes them (without training: the tests are about which tensors move, not about accuracy), and helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner

from hydranet.checkpoint import save_checkpoint
from hydranet.model import create_model
from hydranet.train.config import config_from_dict, config_to_dict

CAMERAS = [
    {"name": "main", "hfov_deg": 60.0, "position": [1.6, 0.0, 1.4], "yaw_deg": 0.0, "pitch_deg": 2.0},
    {"name": "rear", "hfov_deg": 110.0, "position": [-0.9, 0.0, 1.05], "yaw_deg": 180.0, "pitch_deg": 12.0},
]
GRID = {"x_range": [-32.0, 32.0], "y_range": [-32.0, 32.0], "cell": 2.0}
SETUP = {"image_size": [64, 128], "grid": GRID, "rigs": {"test": CAMERAS}}  # two cameras, 64x128, a 2 m grid
SCENES = {"seed": 3, "num_scenes": 1, "frames_per_scene": 5, "lighting": "day", "fog": 0.0}
WORLD = {**SCENES, "setup": SETUP}  # a world file of its own: it says what it renders
TASKS = {"drivable": {}, "depth": {}, "bev_semantic": {}}  # two camera heads, one BEV head
CONFIG: dict[str, Any] = {
    "data": {"datasets": {"w": {"kind": "world", "frames": 5, "world": SCENES}}},  # renders the model's setup
    "model": {"preset": "tiny", "trunk": {"name": "regnet_tiny"}, "setup": SETUP, "tasks": TASKS},
    "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "threads": 1, "log_every": 1, "lr": 3e-3},
}


def make_checkpoint(root: Path, seed: int) -> Path:
    """A checkpoint as `hydranet train` writes it (config + resolved model config), without training."""
    cfg = config_from_dict(CONFIG, "<subgraph test>")
    torch.manual_seed(seed)
    model = create_model(cfg.resolved_model())
    state = {"step": 0, "config": config_to_dict(cfg), "model_config": cfg.resolved_model().model_dump(mode="json"),
             "train_tasks": sorted(TASKS)}
    save_checkpoint(root / "checkpoints" / "step_00000000", model, state)
    return root


def invoke(runner: CliRunner, *args: Any) -> Any:
    from hydranet.cli import app

    return runner.invoke(app, [str(a) for a in args])


def outputs(model: torch.nn.Module, batch) -> dict:
    with torch.no_grad():
        return model.eval()(batch.images, batch.intrinsics, batch.T_ego_from_cam)
