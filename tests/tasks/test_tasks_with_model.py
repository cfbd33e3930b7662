"""The seven tasks inside the real HydraNet: one forward, every loss, one backward, every decode."""

from __future__ import annotations

import torch
from tasks_synthetic import SETUP, make_batch

from hydranet.model import ModelConfig, create_model
from hydranet.tasks.heads import ConvHead, space_to_depth_kernel

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


def test_a_heads_one_by_one_branches_run_as_one_conv_with_the_same_values_and_gradients():
    """Branches that are one 1×1 conv each run as one conv of their stacked weights (the stem's map read once):
    outputs and every parameter's gradient equal each branch run on its own, sub-pixel outputs included."""
    for subpixel in (1, 4):
        torch.manual_seed(0)
        head = ConvHead(8, {"heatmap": 3, "offset": 2, "size": 2}, width=8, depth=1, branch_depth=0,
                        subpixel=subpixel, bias_init={"heatmap": -2.19})
        x = torch.randn(2, 8, 6, 10)
        fused = head(x)
        stem = head.stem(x)
        alone = {name: branch(stem) for name, branch in head.branches.items()}
        assert list(fused) == list(alone)
        for name in alone:
            assert fused[name].shape == (2, head.branches[name][0].out_channels // subpixel**2, 6 * subpixel,
                                         10 * subpixel)
            torch.testing.assert_close(fused[name], alone[name])
        grads = []
        for outputs in (fused, alone):
            head.zero_grad()
            sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outputs.values()).backward(
                retain_graph=True)
            grads.append({n: p.grad.clone() for n, p in head.named_parameters()})
        for n in grads[0]:
            torch.testing.assert_close(grads[0][n], grads[1][n], msg=n)
