"""Decode of perfectly-encoded targets recovers the ground truth (encode -> logits -> decode)."""

from __future__ import annotations

import math

import pytest
import torch
from tasks_synthetic import GRID, N_CAM, SETUP, H, W, context, make_batch, perfect_centernet, perfect_outputs

from hydranet.geometry import wrap_angle
from hydranet.tasks import create_task
from hydranet.tasks.centernet2d import clip_boxes, encode_boxes2d
from hydranet.tasks.heatmaps import draw_gaussian, gaussian_kernel
from hydranet.tasks.objects3d import encode_objects3d

torch.set_num_threads(1)


def match_boxes(pred: dict, gt: dict, key: str) -> None:
    """Every GT box has exactly one decoded box with the same camera and class/state and equal coordinates."""
    gt_boxes = clip_boxes(gt["boxes"], (H, W))
    assert len(pred["boxes"]) == len(gt_boxes)
    for i in range(len(gt_boxes)):
        err = (pred["boxes"] - gt_boxes[i]).abs().amax(-1)
        j = int(err.argmin())
        assert float(err[j]) < 1e-3, (gt_boxes[i], pred["boxes"])
        assert int(pred["camera"][j]) == int(gt["camera"][i])
        assert int(pred[key][j]) == int(gt[key][i])
        assert float(pred["scores"][j]) > 0.99


def test_draw_gaussian_is_the_closed_form_peak_clipped_at_the_borders():
    """Every cell of a splat, centre inside or at an edge, is CenterNet's exp(-(dx² + dy²) / 2σ²) with
    σ = (2r + 1) / 6, max-combined with what the map held; the cached kernel is never written to."""
    for radius in (0, 1, 3, 6):
        kernel = gaussian_kernel(radius).clone()
        sigma = (2 * radius + 1) / 6
        for cx, cy in ((0, 0), (5, 3), (9, 6), (2, 6)):
            heat = torch.full((7, 10), 0.05)
            draw_gaussian(heat, cx, cy, radius)
            ys, xs = torch.meshgrid(torch.arange(7.0), torch.arange(10.0), indexing="ij")
            d2 = (xs - cx) ** 2 + (ys - cy) ** 2
            inside = ((xs - cx).abs() <= radius) & ((ys - cy).abs() <= radius)
            expected = torch.where(inside, torch.maximum(torch.exp(-d2 / (2 * sigma**2)), torch.tensor(0.05)),
                                   torch.tensor(0.05))
            assert torch.allclose(heat, expected, atol=1e-6), (radius, cx, cy)
            assert heat[cy, cx] == 1.0
        assert torch.equal(gaussian_kernel(radius), kernel)


@pytest.mark.parametrize("stride", [4, 8])
def test_detection2d_roundtrip(stride):
    batch = make_batch(2)
    task = create_task("detection2d", SETUP, stride=stride)
    task.build_head(context())
    outputs = perfect_centernet(batch, "detection2d", "classes", 5, stride)
    outputs.pop("_enc")
    decoded = task.decode(outputs, batch)
    for pred, gt in zip(decoded, batch.labels["detection2d"], strict=True):
        match_boxes(pred, gt, "classes")


def test_detection2d_boxes_leaving_the_image_are_clipped():
    batch = make_batch(1)
    gt = batch.labels["detection2d"][0]
    gt["boxes"][0] = torch.tensor([-10.0, -4.0, 10.0, 12.0])  # partly outside: the peak is the visible centre
    task = create_task("detection2d", SETUP, stride=8)
    outputs = perfect_centernet(batch, "detection2d", "classes", 5, 8)
    outputs.pop("_enc")
    match_boxes(task.decode(outputs, batch)[0], gt, "classes")


def test_detection2d_ignores_mostly_hidden_objects():
    batch = make_batch(1)
    gt = batch.labels["detection2d"][0]
    gt["visible"][1] = 0.1
    task = create_task("detection2d", SETUP, stride=8, min_visible=0.25)
    objects = [(gt["boxes"], gt["camera"], gt["classes"], gt["visible"] >= 0.25)]
    enc = encode_boxes2d(objects, N_CAM, 5, (H // 8, W // 8), 8, (H, W))
    assert enc.sample.numel() == len(gt["boxes"]) - 1
    assert 1 not in enc.object_index.tolist()
    # Its box area is excluded from the heatmap loss: neither positive nor negative.
    x1, y1, x2, y2 = (gt["boxes"][1] / 8).tolist()
    cam = int(gt["camera"][1])
    assert float(enc.weight[0, cam, 0, int((y1 + y2) / 2), int((x1 + x2) / 2)]) == 0.0
    assert float(enc.weight.mean()) > 0.5
    # ... and the task's loss does the same: a perfect prediction of the visible objects scores the
    # same whatever the head says inside the hidden object's box.
    perfect = perfect_centernet(batch, "detection2d", "classes", 5, 8)
    enc_full = perfect.pop("_enc")
    hidden = enc_full.object_index == 1
    y, x = int(enc_full.ys[hidden]), int(enc_full.xs[hidden])
    c = int(gt["classes"][1])
    a = perfect["heatmap"].clone()
    a[0, cam, c, y, x] = -9.0
    b = a.clone()
    b[0, cam, c, y, x] = 9.0
    la = task.loss(perfect | {"heatmap": a}, batch)["loss"]
    lb = task.loss(perfect | {"heatmap": b}, batch)["loss"]
    torch.testing.assert_close(la, lb)


def test_detection2d_giou_loss_is_minimal_at_the_truth():
    batch = make_batch(2)
    task = create_task("detection2d", SETUP, stride=8, box_loss="giou")
    outputs = perfect_centernet(batch, "detection2d", "classes", 5, 8)
    outputs.pop("_enc")
    best = task.loss(outputs, batch)
    assert float(best["box"]) < 1e-4
    worse = task.loss(outputs | {"log_size": outputs["log_size"] + 0.3}, batch)
    assert float(worse["box"]) > float(best["box"]) + 0.05


def test_traffic_light_roundtrip_with_lane():
    batch = make_batch(3)
    task = create_task("traffic_light", SETUP)
    outputs = perfect_outputs("traffic_light", batch)
    decoded = task.decode(outputs, batch)
    for pred, gt in zip(decoded, batch.labels["traffic_light"], strict=True):
        match_boxes(pred, gt, "state")
        match_boxes(pred, gt, "lane")
    # The perfect encoding is a (near) minimum of the loss: the lane term is ~0.
    assert float(task.loss(outputs, batch)["lane"]) < 1e-3


def test_drivable_roundtrip_full_resolution_and_stride4():
    batch = make_batch(2)
    task = create_task("drivable", SETUP)
    label = batch.labels["drivable"]
    decoded = task.decode({"logits": (label[:, :, None].float() * 2 - 1) * 10}, batch)
    assert all(torch.equal(d, t) for d, t in zip(decoded, label, strict=True))
    assert decoded[0].dtype == torch.uint8
    # Straight edges on the 4-px cell boundaries survive the stride-4 head + bilinear upsampling exactly
    # (corners round off by a pixel: bilinear interpolation, as intended).
    blocks = torch.zeros(2, N_CAM, 1, H // 4, W // 4)
    blocks[0, :, :, 3:] = 1  # a horizon
    blocks[1, :, :, :, 5:] = 1  # a vertical edge
    logits = (blocks * 2 - 1) * 10
    expected = blocks.repeat_interleave(4, -2).repeat_interleave(4, -1)[:, :, 0].to(torch.uint8)
    decoded = task.decode({"logits": logits}, batch)
    assert all(torch.equal(d, t) for d, t in zip(decoded, expected, strict=True))
    prob = task.probabilities({"logits": logits}, batch)[0]
    assert prob.shape == (N_CAM, H, W) and prob.dtype == torch.float32


def test_lanes_roundtrip():
    batch = make_batch(2)
    task = create_task("lanes", SETUP)
    label = batch.labels["lanes"].long()
    logits = torch.nn.functional.one_hot(label, 4).permute(0, 1, 4, 2, 3).float() * 10
    decoded = task.decode({"logits": logits}, batch)
    assert all(torch.equal(d, t) for d, t in zip(decoded, batch.labels["lanes"], strict=True))
    assert float(task.loss({"logits": logits}, batch)["ce"]) < 1e-3


def test_depth_roundtrip_and_sky_mask():
    batch = make_batch(2)
    task = create_task("depth", SETUP)
    label = batch.labels["depth"]
    log_depth = torch.where(label > 0, label.clamp(min=1e-3).log(), torch.full_like(label, math.log(500.0)))
    decoded = task.decode({"log_depth": log_depth[:, :, None]}, batch)
    for d, t in zip(decoded, label, strict=True):
        assert d.dtype == torch.float32 and d.shape == t.shape
        valid = t > 0
        torch.testing.assert_close(d[valid], t[valid], rtol=1e-5, atol=1e-5)
        assert float(d[~valid].min()) == task.cfg.max_depth  # sky decodes to the far clamp
    # Perfect prediction: the loss is ~0 whatever is predicted in the sky.
    out = {"log_depth": log_depth[:, :, None].requires_grad_()}
    assert task.loss(out, batch)["loss"].item() < 2e-3
    sky = torch.where(label > 0, log_depth, torch.zeros_like(log_depth))
    torch.testing.assert_close(task.loss({"log_depth": sky[:, :, None]}, batch)["loss"], task.loss(out, batch)["loss"])


def test_bev_semantic_roundtrip():
    batch = make_batch(2)
    task = create_task("bev_semantic", SETUP)
    task.build_head(context())
    label = batch.labels["bev_semantic"]
    decoded = task.decode({"logits": (label.float() * 2 - 1) * 10}, batch)
    assert all(torch.equal(d, t) for d, t in zip(decoded, label, strict=True))
    assert decoded[0].shape == (6, *GRID.shape) and decoded[0].dtype == torch.uint8


def test_objects3d_roundtrip():
    batch = make_batch(3)
    task = create_task("objects3d", SETUP)
    task.build_head(context())
    targets = batch.labels["objects3d"]
    rc = GRID.shape
    outputs = perfect_outputs("objects3d", batch)
    decoded = task.decode(outputs, batch)
    for pred, gt in zip(decoded, targets, strict=True):
        assert len(pred["boxes"]) == len(gt["boxes"])
        for i in range(len(gt["boxes"])):
            j = int((pred["boxes"][:, :2] - gt["boxes"][i, :2]).norm(dim=-1).argmin())
            torch.testing.assert_close(pred["boxes"][j, :6], gt["boxes"][i, :6], atol=1e-4, rtol=1e-5)
            assert abs(float(wrap_angle(pred["boxes"][j, 6] - gt["boxes"][i, 6]))) < 1e-4
            torch.testing.assert_close(pred["velocity"][j], gt["velocity"][i], atol=1e-5, rtol=1e-5)
            assert int(pred["classes"][j]) == int(gt["classes"][i])
    # Half-resolution BEV features: cells scale through the grid, centres still land within a cell.
    half = (rc[0] // 2, rc[1] // 2)
    enc2 = encode_objects3d(targets[:1], GRID, half, 5, 0.1, 2)
    row, col = GRID.metres_to_index(targets[0]["boxes"][:, 0], targets[0]["boxes"][:, 1])
    torch.testing.assert_close(enc2["ys"].float() + enc2["reg"][:, 0], row / 2)
    torch.testing.assert_close(enc2["xs"].float() + enc2["reg"][:, 1], col / 2)


def test_objects3d_skips_objects_off_the_grid():
    batch = make_batch(1)
    gt = batch.labels["objects3d"][0]
    gt["boxes"][0, 0] = 100.0  # far beyond x_range
    enc = encode_objects3d([gt], GRID, GRID.shape, 5, 0.1, 2)
    assert enc["sample"].numel() == len(gt["boxes"]) - 1


def test_objects3d_hidden_objects_are_ignored_not_negatives():
    """An object no camera sees (visible < min_visible) is neither a peak nor a negative in the loss."""
    batch = make_batch(1)
    gt = dict(batch.labels["objects3d"][0])
    n = len(gt["boxes"])
    gt["visible"] = torch.ones(n)
    gt["visible"][0] = 0.0
    enc = encode_objects3d([gt], GRID, GRID.shape, 5, 0.1, 2, min_visible=0.05)
    assert enc["sample"].numel() == n - 1
    row, col = GRID.metres_to_index(gt["boxes"][:1, 0], gt["boxes"][:1, 1])
    iy, ix = int(row.floor()), int(col.floor())
    assert enc["heatmap"][0, :, iy, ix].max() < 1.0 and enc["weight"][0, 0, iy, ix] == 0.0
    everything = encode_objects3d([gt], GRID, GRID.shape, 5, 0.1, 2, min_visible=0.0)
    assert everything["sample"].numel() == n and bool(everything["weight"].eq(1.0).all())


@pytest.mark.parametrize("name", ["detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic",
                                  "objects3d"])
def test_metric_scores_perfect_decodes_perfectly(name):
    """Decoded outputs feed the task's own metric (helper E's) and a perfect encoding scores perfectly."""
    batch = make_batch(3, absent={1: (name,)})
    task = create_task(name, SETUP)
    task.build_head(context())
    metric = task.make_metric()
    metric.update(task.decode(perfect_outputs(name, batch), batch), task.targets(batch))
    result = metric.compute()
    headline, value = next(iter(result.items()))
    if task.higher_is_better:
        assert value > 0.99, result
    else:
        assert value < 1e-4, result
