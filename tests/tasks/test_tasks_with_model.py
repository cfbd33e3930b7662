"""The seven tasks inside the real HydraNet: one forward, every loss, one backward, every decode."""

from __future__ import annotations

import torch
from tasks_synthetic import SETUP, make_batch

from hydranet.model import ModelConfig, create_model

torch.set_num_threads(1)


def test_all_seven_tasks_train_and_decode_in_the_model():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup=SETUP)
    model = create_model(cfg)
    assert len(model.task_objects) == 7
    batch = make_batch(2, absent={1: ("depth", "objects3d", "lanes")})
    out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam)
    total = torch.zeros(())
    for name, task in model.task_objects.items():
        loss = task.loss(out[name], batch)
        assert torch.isfinite(loss["loss"]), name
        total = total + loss["loss"]
        decoded = task.decode(out[name], batch)
        assert len(decoded) == 2
    total.backward()
    missing = [n for n, p in model.heads.named_parameters() if p.grad is None]
    assert not missing, missing


def test_a_head_reading_the_images_pixels_takes_any_image_size():
    # pixel_skip cuts the image into stride x stride cells: a side that is no multiple of the stride is padded as
    # the trunk's strided convolutions round up (before: pixel_unshuffle raised inside the first training step).
    from hydranet.data import collate
    from hydranet.world import SyntheticWorld, WorldConfig

    torch.manual_seed(0)
    for hw in ((97, 190), (96, 192)):
        cfg = ModelConfig.preset("tiny", setup={"image_size": hw}, tasks={"traffic_light": {"pixel_skip": True}})
        model = create_model(cfg)
        world = SyntheticWorld(WorldConfig(seed=0, num_scenes=1, frames_per_scene=1,
                                           setup=model.setup.model_dump(mode="json")))
        batch = collate([world[0]])
        out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam)["traffic_light"]
        loss = model.task_objects["traffic_light"].loss(out, batch)["loss"]
        assert torch.isfinite(loss)
        loss.backward()
