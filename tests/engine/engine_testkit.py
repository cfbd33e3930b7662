"""A tiny 7-task HydraNet and a tiny synthetic pool shared by the engine tests (unique module name)."""

from __future__ import annotations

from pathlib import Path

import torch

from hydranet.model import ModelConfig, create_model
from hydranet.train.checkpoint import save_checkpoint

H, W = 48, 96
GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 1.0}
TASKS = {
    "detection2d": {"score_threshold": 0.0, "max_detections": 12},
    "traffic_light": {"score_threshold": 0.0, "max_detections": 6},
    "drivable": {},
    "depth": {},
    "bev_semantic": {},
    "objects3d": {"score_threshold": 0.0, "max_detections": 10},
}
WORLD = {"seed": 3, "num_scenes": 3, "frames_per_scene": 5, "height": H, "width": W,
         "grid": {"x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0], "cell": 1.0}}


def tiny_config(tasks: dict | None = None) -> ModelConfig:
    return ModelConfig.preset(
        "tiny", image_size=(H, W), trunk={"name": "regnet_tiny"}, neck={"channels": 16, "min_level": 2},
        fusion={"channels": 16, "encoder_blocks": 1}, bev_channels=16, grid=GRID, tasks=tasks or TASKS)


def write_checkpoint(directory: Path, seed: int = 0, tasks: dict | None = None) -> Path:
    torch.manual_seed(seed)
    cfg = tiny_config(tasks)
    model = create_model(cfg)
    save_checkpoint(directory, model, {"model_config": cfg.model_dump(mode="json"), "config": {}, "step": 0})
    return directory


def write_world_yaml(path: Path, **overrides) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**WORLD, **overrides}))
    return path
