"""A tiny checkpoint trained for a few steps (so heads carry real signal), shared by the eval tests."""

from pathlib import Path

import pytest
import torch

from hydranet.checkpoint import save_checkpoint
from hydranet.data.sample import collate
from hydranet.model import ModelConfig, create_model
from hydranet.world import SyntheticWorld, WorldConfig

TASKS = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic", "objects3d")
GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 1.0}

SUITE = """
description: tiny test suite
world: {num_scenes: 8, frames_per_scene: 4, lighting: day, fog: 0.0}
scenarios:
  straight: {layout: straight}
  night: {layout: intersection, lighting: night}  # intersections: frames with traffic lights to judge
seeds: [500, 501]
bootstrap: 100
frames: 3
tasks:
  drivable:
    thresholds: {miou: ">= 0.30"}
    tolerance: {miou: 0.02}
  depth:
    thresholds: {abs_rel: "<= 5.0", delta1: ">= 0.0"}
  detection2d:
    thresholds: {map: ">= 0.0"}
  objects3d: {}
  lanes: {}
  bev_semantic: {}
  traffic_light: {}
"""


def train_tiny(steps: int = 30) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": (64, 128), "grid": GRID}, tasks={t: {} for t in TASKS})
    cfg.trunk.name = "regnet_tiny"
    model = create_model(cfg)
    world = SyntheticWorld(WorldConfig(seed=0, num_scenes=16, frames_per_scene=4,
                                       setup={"image_size": (64, 128), "grid": GRID}))
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    model.train()
    for step in range(steps):
        batch = collate([world[(2 * step + k) % len(world)] for k in range(2)])
        out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam)
        loss = sum(model.task_objects[n].loss(out[n], batch)["loss"] for n in TASKS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_tiny()
    finally:
        torch.set_num_threads(threads)
    root = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(root / "run" / "step_30", model, {"model_config": model.cfg.model_dump(mode="json"),
                                                             "config": {}, "step": 30})


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("suites") / "tiny.yaml"
    p.write_text(SUITE)
    return p
