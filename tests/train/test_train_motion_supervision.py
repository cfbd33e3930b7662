"""The auxiliary loss on the video memory's motion read-out: zero for the true velocities, the L1 error
otherwise, only where an entry is valid; and the clip trainer adds its gradient to the objects3d loss,
reaching the matching but not the shared encoder."""

import math

import pytest
import torch

from hydranet.geometry import BevGrid
from hydranet.model import create_model
from hydranet.model.temporal import MotionReadout
from hydranet.train.clips import ClipTrainer, collate_clip
from hydranet.train.config import config_from_dict
from hydranet.train.motion_supervision import motion_readout_loss
from hydranet.world import SyntheticWorld, WorldConfig

GRID = BevGrid((-8.0, 8.0), (-8.0, 8.0), 2.0)


def _target(xy, velocity):
    boxes = torch.zeros(len(xy), 7)
    boxes[:, :2] = torch.tensor(xy)
    boxes[:, 3:6] = 1.0
    return {"boxes": boxes, "velocity": torch.tensor(velocity, dtype=torch.float32), "classes": torch.zeros(len(xy))}


def test_the_loss_is_the_velocity_error_at_each_object_centre_over_valid_entries():
    velocity = torch.zeros(1, 2, 2, *GRID.shape)
    valid = torch.ones(1, 2, *GRID.shape)
    r, c, _ = GRID.cell_indices(torch.tensor([3.0]), torch.tensor([-5.0]))
    velocity[0, :, :, r, c] = torch.tensor([10.0, -1.0])[None, :, None]
    target = [_target([[3.0, -5.0]], [[10.0, -1.0]])]
    assert float(motion_readout_loss(MotionReadout(velocity, valid), target, GRID)) == pytest.approx(0.0)
    # Entry 1 reads 2 m/s too slow in x: the mean over the two entries is 1.
    velocity[0, 1, 0, r, c] = 8.0
    assert float(motion_readout_loss(MotionReadout(velocity, valid), target, GRID)) == pytest.approx(1.0)
    # ...unless entry 1 is invalid there (no history, off its grid).
    valid[0, 1] = 0.0
    assert float(motion_readout_loss(MotionReadout(velocity, valid), target, GRID)) == pytest.approx(0.0)
    # Unknown velocities (NaN), objects off the grid, unlabelled samples and no valid entry give no loss.
    readout = MotionReadout(velocity, valid)
    assert motion_readout_loss(readout, [_target([[3.0, -5.0]], [[math.nan, 0.0]])], GRID) is None
    assert motion_readout_loss(readout, [_target([[30.0, 0.0]], [[1.0, 0.0]])], GRID) is None
    assert motion_readout_loss(readout, [None], GRID) is None
    assert motion_readout_loss(MotionReadout(velocity, valid * 0), target, GRID) is None
    with pytest.raises(ValueError, match="2 targets for a read-out of batch 1"):
        motion_readout_loss(readout, [None, None], GRID)


def test_the_clip_trainer_adds_the_motion_loss_to_objects3d_and_it_reaches_the_matching(tmp_path):
    world = {"seed": 3, "num_scenes": 1, "frames_per_scene": 4, "height": 64, "width": 128, "grid": {"cell": 2.0},
             "traffic_density": 2.0}
    raw = {"data": {"datasets": {"w": {"kind": "world", "frames": 4, "world": world}}},
           "model": {"preset": "tiny", "image_size": [64, 128], "grid": {"cell": 2.0},
                     "fusion": {"temporal": {"time_queue": 1, "space_queue": 1, "push_every_frames": 1,
                                             "correlation_radius": 2}},
                     "tasks": {"objects3d": {"min_visible": 0.0}}},
           "train": {"steps": 1, "batch_size": 1, "warmup_steps": 0, "threads": 1, "clip": {"length": 4}}}
    data = SyntheticWorld(WorldConfig(**world))
    clip = collate_clip([data[i] for i in range(4)], 4, 0)

    def losses(weight):
        cfg = config_from_dict(raw | {"train": raw["train"] | {"clip": {"length": 4, "motion_weight": weight}}})
        torch.manual_seed(0)
        model = create_model(cfg.resolved_model())
        trainer = ClipTrainer(cfg, model, data, tmp_path / f"w{weight}", progress=False,
                              model_config=cfg.resolved_model().model_dump())
        loss = trainer.task_losses(clip, ["objects3d"])["objects3d"]
        return loss, model

    plain, plain_model = losses(0.0)
    supervised, model = losses(1.0)
    # Its gradient, not its value: the balancer's objects3d weight is not moved by the auxiliary loss.
    assert float(supervised.detach()) == pytest.approx(float(plain.detach()))
    plain.backward()
    supervised.backward()
    # It trains the matching (the softmax sharpness and the match features), which the heads alone cannot
    # reach at the start (the memory's output conv starts at zero)...
    beta = plain_model.fusion.temporal.log_beta.grad
    assert beta is None or float(beta.abs()) == 0.0
    assert float(model.fusion.temporal.log_beta.grad.abs()) > 0
    assert float(model.fusion.temporal.match[0].weight.grad.abs().sum()) > 0
    # ...and never the shared encoder: the match features read a detached BEV.
    torch.testing.assert_close(model.fusion.encoder.out[0].weight.grad, plain_model.fusion.encoder.out[0].weight.grad)
