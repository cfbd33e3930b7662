"""Overfit tests: the whole model (trunk, neck, fusion, head) learns a few world frames of one task
until its own metric is near 1. A model that cannot memorise two frames has a broken loss, target,
decode or gradient path, whatever the held-out numbers say.

Small on purpose (two cameras, 64x128 images, a 16-channel model) so each test runs in seconds.
"""

from __future__ import annotations

import pytest
import torch

from hydranet.data.sample import collate
from hydranet.model import ModelConfig, create_model
from hydranet.setup import Rig, Setup, default_rig
from hydranet.world import SyntheticWorld
from hydranet.world.config import WorldConfig

torch.set_num_threads(1)
H, W = 64, 128
# Two cameras of the default rig (main, narrow) on a 64 m grid at 1 m: what the world renders and the model takes.
SETUP = Setup(image_size=(H, W), grid={"x_range": (-32.0, 32.0), "y_range": (-32.0, 32.0), "cell": 1.0},
              rigs={"two": Rig(cameras=default_rig((H, W)).cameras[:2])})


@pytest.fixture(scope="module")
def frames():
    world = SyntheticWorld(WorldConfig(seed=13, num_scenes=2, frames_per_scene=1, setup=SETUP, traffic_density=2.0,
                                       layout="intersection"))
    return collate([world[i] for i in range(len(world))])


def overfit(batch, task_name: str, steps: int, lr: float = 3e-3, **task_options) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup=SETUP, neck={"channels": 16}, bev_channels=16,
                             fusion={"channels": 16, "levels": ["p2", "p3"]}, tasks={task_name: task_options})
    model = create_model(cfg)
    task = model.task_objects[task_name]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=[task_name])
        loss = task.loss(out[task_name], batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=[task_name])
    metric = task.make_metric()
    metric.update(task.decode(out[task_name], batch), task.targets(batch))
    return metric.compute()


def test_objects3d_overfits_two_frames(frames):
    boxes = torch.cat([t["boxes"] for t in frames.labels["objects3d"]])
    assert ((boxes[:, 0].abs() < 32) & (boxes[:, 1].abs() < 32)).sum() >= 8
    # lr 1e-3: mAP 1.00 at 200 steps from each of three initialisations; at 3e-3 the offsets of a few boxes stalled
    # half a metre off in two of them (mAP 0.78-0.93), so the test measured the draw, not the gradient path.
    result = overfit(frames, "objects3d", steps=200, lr=1e-3)
    assert result["map"] > 0.9, result


def test_detection2d_overfits_two_frames(frames):
    assert sum(len(t["boxes"]) for t in frames.labels["detection2d"]) >= 8
    result = overfit(frames, "detection2d", steps=100, stride=4)  # measured: mAP 0.83, AP50 0.96 at 75
    assert result["map"] > 0.7 and result["ap50"] > 0.9, result


def test_traffic_light_overfits_red_and_green():
    """Lights of two states (seed 20: three green, one red): found and each state named, end to end."""
    world = SyntheticWorld(WorldConfig(seed=20, num_scenes=2, frames_per_scene=1, setup=SETUP, traffic_density=2.0,
                                       layout="intersection"))
    batch = collate([world[i] for i in range(len(world))])
    states = torch.cat([t["state"] for t in batch.labels["traffic_light"]]).tolist()
    assert 0 in states and 2 in states  # red and green
    result = overfit(batch, "traffic_light", steps=150)  # measured: 1.0 at 150 steps
    assert result["balanced_accuracy"] > 0.9 and result["recall/red"] == 1.0, result
