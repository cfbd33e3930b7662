"""A tiny 7-task HydraNet and a tiny synthetic pool shared by the engine tests (unique module name)."""

from __future__ import annotations

from pathlib import Path

import torch

from hydranet.checkpoint import save_checkpoint
from hydranet.model import ModelConfig, create_model

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
WORLD = {"seed": 3, "num_scenes": 3, "frames_per_scene": 5, "setup": {"image_size": [H, W],
         "grid": {"x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0], "cell": 1.0}}}


def tiny_config(tasks: dict | None = None) -> ModelConfig:
    return ModelConfig.preset(
        "tiny", setup={"image_size": (H, W), "grid": GRID}, trunk={"name": "regnet_tiny"},
        neck={"channels": 16, "min_level": 2}, fusion={"channels": 16, "encoder_blocks": 1}, bev_channels=16,
        tasks=tasks or TASKS)


def write_checkpoint(directory: Path, seed: int = 0, tasks: dict | None = None,
                     drivable_bias: float | None = None) -> Path:
    """An untrained checkpoint; ``drivable_bias`` sets the drivable logit bias (+10: "all road")."""
    torch.manual_seed(seed)
    cfg = tiny_config(tasks)
    model = create_model(cfg)
    if drivable_bias is not None:
        with torch.no_grad():
            model.heads["drivable"].head.branches["logits"][0].bias.fill_(drivable_bias)
    save_checkpoint(directory, model, {"model_config": cfg.model_dump(mode="json"), "config": {}, "step": 0})
    return directory


def write_world_yaml(path: Path, **overrides) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**WORLD, **overrides}))
    return path


CAMERA_TASKS = {"drivable": {}, "traffic_light": {"score_threshold": 0.05}}


def write_pipeline(root: Path, *, budget: int = 2, iterations: int = 2, steps: int = 4, labeller: str = "oracle",
                   tolerance: float = 1.0, overrides: tuple[str, ...] = (),
                   triggers: str = "entropy:task=drivable,condition:name=night") -> Path:
    """A complete tiny vacation setup under ``root``: start checkpoint, train config, suite, pipeline."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    write_checkpoint(root / "start" / "step_00000000", tasks=CAMERA_TASKS, drivable_bias=10.0)
    cfg = tiny_config(CAMERA_TASKS).model_dump(mode="json")
    world = {**WORLD, "seed": 11, "num_scenes": 2, "frames_per_scene": 3}
    train = {"data": {"datasets": {"base": {"kind": "world", "frames": 6, "world": world}}},
             "model": cfg,
             "train": {"steps": steps, "batch_size": 2, "threads": 1, "num_workers": 0, "log_every": 1,
                       "ckpt_every": 2, "warmup_steps": 0, "lr": 1e-3}}
    (root / "train.yaml").write_text(yaml.safe_dump(train))
    suite = {"name": "tiny_night", "world": {"num_scenes": 2, "frames_per_scene": 3, "fog": 0.0},
             "scenarios": {"night": {"lighting": "night"}}, "seeds": [5, 6], "frames": 2, "bootstrap": 20,
             "tasks": {"drivable": {"thresholds": {"miou": ">= 0.0"}, "tolerance": {"miou": tolerance}}}}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    write_world_yaml(root / "pool.yaml", num_scenes=2, frames_per_scene=4, seed=21)
    pipe = {"pool": "pool.yaml", "model": "start/step_00000000", "train_config": "train.yaml",
            "iterations": iterations, "mine": {"triggers": triggers, "budget": budget},
            "label": {"kind": labeller, "teacher": "start/step_00000000", "clip_radius": 2, "min_confidence": 0.0},
            "train": {"mode": "finetune", "steps": steps, "overrides": list(overrides)},
            "eval": {"suites": ["suite.yaml"], "frames": 2},
            "export": {"enabled": True}}
    (root / "pipeline.yaml").write_text(yaml.safe_dump(pipe))
    return root / "pipeline.yaml"
