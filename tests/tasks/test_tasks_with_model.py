"""The seven tasks inside the real HydraNet: one forward, every loss, one backward, every decode."""

from __future__ import annotations

import torch
from tasks_synthetic import SETUP, make_batch

from hydranet.model import ModelConfig, create_model
from hydranet.tasks.common import space_to_depth_kernel

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


def test_space_to_depth_conv_is_pixel_unshuffle_exactly():
    # The pixel_skip head cuts the image into cells with a one-hot conv (the matrix engine, one ONNX Conv) in
    # place of pixel_unshuffle: the same values to the bit, fp32 and bf16 alike, in pixel_unshuffle's channel order.
    torch.manual_seed(0)
    image = (torch.randint(0, 256, (2, 3, 16, 24)).float() - 120.0) / 58.0
    for stride in (2, 4):
        kernel = space_to_depth_kernel(3, stride)
        for dtype in (torch.float32, torch.bfloat16):
            x = image.to(dtype).contiguous(memory_format=torch.channels_last)
            out = torch.nn.functional.conv2d(x, kernel.to(dtype), stride=stride)
            assert torch.equal(out, torch.nn.functional.pixel_unshuffle(image, stride).to(dtype))
