"""Every built-in task against the Task contract: head shapes, finite losses that learn, exact
zero-contribution of absent samples, graph-connected zero losses, option validation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tasks_synthetic import GRID, N_CAM, SETUP, H, W, context, features, make_batch, run_head, select, subset

from hydranet.tasks import TASKS, create_task, grid_raster_tasks

torch.set_num_threads(1)

ALL = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic", "objects3d")
SMALL = {"width": 8, "depth": 1}


def expected_shapes(name: str, b: int) -> dict[str, tuple[int, ...]]:
    r, c = GRID.shape
    cam4 = (b, N_CAM, H // 4, W // 4)
    full = (b, N_CAM, H, W)  # dense tasks: sub-pixel outputs at image resolution
    return {
        "detection2d": {"heatmap": (*cam4[:2], 5, *cam4[2:]), "offset": (*cam4[:2], 2, *cam4[2:]),
                        "log_size": (*cam4[:2], 2, *cam4[2:])},
        "traffic_light": {"heatmap": (*cam4[:2], 1, *cam4[2:]), "offset": (*cam4[:2], 2, *cam4[2:]),
                          "log_size": (*cam4[:2], 2, *cam4[2:]), "state": (*cam4[:2], 3, *cam4[2:]),
                          "lane": (*cam4[:2], 5, *cam4[2:])},
        "drivable": {"logits": (*full[:2], 1, *full[2:])},
        "lanes": {"logits": (*full[:2], 4, *full[2:])},
        "depth": {"log_depth": (*full[:2], 1, *full[2:])},
        "bev_semantic": {"logits": (b, 6, r, c)},
        "objects3d": {"heatmap": (b, 5, r, c), "offset": (b, 2, r, c), "z": (b, 1, r, c), "log_size": (b, 3, r, c),
                      "rot": (b, 2, r, c), "velocity": (b, 2, r, c)},
    }[name]


def test_registry_has_all_seven():
    assert set(ALL) <= set(TASKS)
    for name in ALL:
        task = create_task(name, SETUP)
        assert task.name == name == task.label
        assert task.space == ("bev" if name in ("bev_semantic", "objects3d") else "camera")
    with pytest.raises(KeyError, match="registered tasks"):
        create_task("no_such_task", SETUP)


def test_only_labels_rasterised_on_the_bev_grid_need_the_models_grid():
    """bev_semantic's map lies on the grid; objects3d's boxes are in metres (a BEV task all the same), camera
    tasks' labels in pixels: the one rule predict, view, infer and eval apply to data on another grid."""
    tasks = {name: create_task(name, SETUP) for name in ALL}
    assert grid_raster_tasks(tasks) == ["bev_semantic"]
    assert grid_raster_tasks({"boxes": tasks["objects3d"], "map": tasks["bev_semantic"]}) == ["map"]
    assert grid_raster_tasks({"objects3d": tasks["objects3d"], "depth": tasks["depth"]}) == []


@pytest.mark.parametrize("name", ALL)
def test_head_output_shapes(name):
    task = create_task(name, SETUP, **SMALL)
    head = task.build_head(context())
    out = run_head(task, head, 2)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected_shapes(name, 2)


@pytest.mark.parametrize("name", ALL)
def test_loss_finite_and_ignores_absent_samples(name):
    task = create_task(name, SETUP, **SMALL)
    head = task.build_head(context())
    batch = make_batch(3, absent={1: (name,)})
    out = run_head(task, head, 3)
    full = task.loss(out, batch)
    assert torch.isfinite(full["loss"]) and full["loss"].item() > 0
    # The same batch without the absent sample gives the same loss, bit for bit up to float order.
    without = task.loss(select(out, [0, 2]), subset(batch, [0, 2]))
    torch.testing.assert_close(full["loss"], without["loss"], rtol=1e-5, atol=1e-6)
    # Changing the absent sample's outputs changes nothing either.
    poked = {k: v.clone() for k, v in out.items()}
    for v in poked.values():
        v[1] += 5.0
    torch.testing.assert_close(task.loss(poked, batch)["loss"], full["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_all_absent_gives_connected_zero(name):
    task = create_task(name, SETUP, **SMALL)
    head = task.build_head(context())
    batch = make_batch(2, absent={0: (name,), 1: (name,)})
    assert name not in batch.labels
    out = run_head(task, head, 2)
    loss = task.loss(out, batch)["loss"]
    assert loss.item() == 0.0
    loss.backward()  # connected: every head parameter gets a (zero) gradient
    grads = [p.grad for p in head.parameters()]
    assert all(g is not None for g in grads)
    assert all(float(g.abs().sum()) == 0.0 for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_loss_decreases_when_overfitting(name):
    torch.manual_seed(0)
    task = create_task(name, SETUP, width=16, depth=1)
    head = task.build_head(context())
    batch = make_batch(2)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    losses = []
    for _ in range(40):
        loss = task.loss(run_head(task, head, 2), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", ALL)
def test_decode_formats(name):
    task = create_task(name, SETUP, **SMALL)
    head = task.build_head(context())
    batch = make_batch(2)
    decoded = task.decode(run_head(task, head, 2), batch)
    assert len(decoded) == 2
    target = task.targets(batch)[0]
    if isinstance(target, dict):
        for key in ("boxes", "scores"):
            assert key in decoded[0]
        assert decoded[0]["boxes"].shape[-1] == target["boxes"].shape[-1]
    else:
        assert decoded[0].shape == target.shape
        assert decoded[0].dtype == target.dtype


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="detection2d.*box_loss"):
        create_task("detection2d", SETUP, box_loss="smooth")
    with pytest.raises(ValueError, match="lanes.*colour"):
        create_task("lanes", SETUP, colour="red")
    with pytest.raises(ValueError, match="fuse_strides"):
        create_task("drivable", SETUP, stride=8, fuse_strides=[4]).build_head(context())
    task = create_task("depth", SETUP, stride=2)
    with pytest.raises(ValueError, match="stride 2.*p2"):
        task.build_head(context())


def test_stride_defaults_follow_the_neck():
    ctx = context()
    assert create_task("detection2d", SETUP).build_head(ctx).stride == 4
    assert create_task("detection2d", SETUP, stride=8).build_head(ctx).stride == 8
    assert create_task("lanes", SETUP).build_head(ctx).stride == 4
    # A neck without stride 4 (min_level=3): dense heads fall back to its finest level.
    coarse = replace(ctx, camera_strides={"p3": 8, "p4": 16})
    fpn = {k: v for k, v in features(2)[0].items() if k != "p2"}
    for upsample, out_stride in (("bilinear", 8), ("subpixel", 1)):
        task = create_task("drivable", SETUP, upsample=upsample, **SMALL)
        head = task.build_head(coarse)
        assert head.stride == 8 and task.stride == out_stride
        out = {k: v.reshape(2, N_CAM, *v.shape[1:]) for k, v in head(fpn).items()}
        assert out["logits"].shape[-2:] == (H // out_stride, W // out_stride)
        assert task.decode(out, make_batch(2))[0].shape == (N_CAM, H, W)
    # Fusing a coarser level keeps the output stride.
    head = create_task("detection2d", SETUP, stride=8, fuse_strides=[16], **SMALL).build_head(ctx)
    assert head.levels == ["p3", "p4"]
    assert head(features(1)[0])["heatmap"].shape[-2:] == (H // 8, W // 8)


def test_camera_output_shape_is_checked():
    task = create_task("drivable", SETUP, **SMALL)
    head = task.build_head(context())
    fpn_out = head(features(2)[0])
    with pytest.raises(ValueError, match="unfold"):
        task.loss(fpn_out, make_batch(2))


@pytest.mark.parametrize("name", ["detection2d", "traffic_light", "objects3d"])
def test_present_samples_without_objects_are_all_negatives(name):
    """A labelled frame with no objects is a valid label: every cell is a negative, the loss is finite."""
    task = create_task(name, SETUP, **SMALL)
    head = task.build_head(context())
    batch = make_batch(2)
    for label in batch.labels[name]:
        for key, value in label.items():
            label[key] = value[:0]
    out = run_head(task, head, 2)
    loss = task.loss(out, batch)
    assert torch.isfinite(loss["loss"]) and loss["loss"].item() > 0
    loss["loss"].backward()
    assert all(p.grad is not None for p in head.parameters())


def test_objects3d_code_weights_are_validated():
    with pytest.raises(ValueError, match="objects3d.*unknown regression groups"):
        create_task("objects3d", SETUP, code_weights={"speed": 1.0})
