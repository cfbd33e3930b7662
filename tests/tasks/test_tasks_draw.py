"""Every task draws its ground truth and its predictions onto ``hydranet.viz.Views``: the same class in the same
colour in both, ground truth dashed, a legend and "0 detections" notes under the picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tasks_synthetic import GRID, SETUP, context, make_batch, perfect_outputs

from hydranet.tasks import create_task
from hydranet.viz import CLASS_COLORS, Views

torch.set_num_threads(1)

ALL = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic", "objects3d")


def _pixels(views: Views) -> np.ndarray:
    return np.concatenate([np.asarray(im).reshape(-1, 3) for im in [*views.cameras, views.bev]])


def _has_color(views: Views, color: tuple[int, int, int]) -> bool:
    return bool((_pixels(views) == np.array(color)).all(-1).any())


@pytest.mark.parametrize("name", ALL)
def test_draw_changes_the_picture_and_tells_gt_from_prediction(name):
    batch = make_batch(1)
    task = create_task(name, SETUP)
    task.build_head(context())
    decoded = task.decode(perfect_outputs(name, batch), batch)[0]
    target = task.targets(batch)[0]
    blank = _pixels(Views.from_batch(batch, 0, GRID, scale=1))
    gt_views, pred_views = Views.from_batch(batch, 0, GRID, scale=1), Views.from_batch(batch, 0, GRID, scale=1)
    task.draw(gt_views, target, ground_truth=True)
    task.draw(pred_views, decoded, ground_truth=False)
    gt_px, pred_px = _pixels(gt_views), _pixels(pred_views)
    assert (gt_px != blank).any() and (pred_px != blank).any()
    if name not in ("drivable", "lanes"):  # masks: one palette, the panel (GT row / prediction row) tells them apart
        assert (gt_px != pred_px).any()  # same geometry, different styling
    if name in ("detection2d", "objects3d"):  # outlines in exact class colours (masks are alpha-blended)
        drawn = {c for c in ("car", "truck", "pedestrian", "cone", "traffic_light")
                 if _has_color(pred_views, CLASS_COLORS[c])}
        assert drawn and all(_has_color(gt_views, CLASS_COLORS[c]) for c in drawn)  # same class, same colour
        count = lambda v: sum(int((_pixels(v) == np.array(CLASS_COLORS[c])).all(-1).sum()) for c in drawn)  # noqa: E731
        assert count(gt_views) < 0.8 * count(pred_views)  # ground truth dashed: fewer outline pixels
    image = pred_views.compose(title=name)
    assert image.width > 0 and image.height > 0
    task.draw(pred_views, None)  # an absent label draws nothing and does not fail


@pytest.mark.parametrize("name", ["detection2d", "traffic_light", "objects3d"])
def test_a_head_that_found_nothing_says_so(name):
    batch = make_batch(1)
    task = create_task(name, SETUP)
    task.build_head(context())
    decoded = task.decode(perfect_outputs(name, batch), batch)[0]
    empty = {k: v[:0] for k, v in decoded.items()}
    views = Views.from_batch(batch, 0, GRID, scale=1)
    task.draw(views, empty)
    assert views.notes == [f"{name}: 0 detections with score >= {task.cfg.draw_threshold:g}"]  # none below it
    plain = Views.from_batch(batch, 0, GRID, scale=1).compose()
    noted = views.compose()
    assert noted.height > plain.height  # the note is written in the footer, under the legend


def test_lanes_and_drivable_use_one_palette_for_labels_and_predictions():
    batch = make_batch(1)
    for name in ("lanes", "drivable"):
        task = create_task(name, SETUP)
        task.build_head(context())
        target = task.targets(batch)[0]
        a, b = Views.from_batch(batch, 0, GRID, scale=1), Views.from_batch(batch, 0, GRID, scale=1)
        task.draw(a, target, ground_truth=True)
        task.draw(b, target, ground_truth=False)
        assert np.array_equal(_pixels(a), _pixels(b)), name  # same mask -> the very same picture


def test_dense_overlays_keep_the_camera_image_readable():
    """``hydranet predict`` draws every task on one picture. Before, a prediction covering the image with depth
    (alpha 0.45), drivable (0.3) and lanes (0.8) left 0.55 * 0.7 * 0.2 = 8 % of the photo; now every pixel keeps
    at least ``MIN_IMAGE_SHARE`` of it. Measured as the photo's share: the same overlays on a black and on a
    white rig differ by share * 255."""
    from hydranet.viz import MIN_IMAGE_SHARE

    batch = make_batch(1)
    full = torch.ones(batch.images.shape[1], *batch.images.shape[-2:])
    outputs = {"depth": full * 15.0, "drivable": full.bool(), "lanes": (full * 2).long()}
    pictures = []
    for value in (0, 255):
        views = Views(torch.full_like(batch.images[0], value), batch.intrinsics[0], batch.T_ego_from_cam[0],
                      batch.camera_names, GRID, scale=1)
        for name in ("depth", "drivable", "lanes"):  # predict's order: alphabetical
            create_task(name, SETUP).draw(views, outputs[name])
        pictures.append(np.stack([np.asarray(im, dtype=np.float64) for im in views.cameras]))
    share = (pictures[1] - pictures[0]) / 255.0
    assert share.min() >= MIN_IMAGE_SHARE - 1 / 255  # rounding to uint8
    assert share.max() < 0.7  # the overlays are still there

    # One mask alone is blended at its own alpha (the floor does not touch it), and lanes remain the most
    # visible overlay where they are drawn over drivable space.
    views = Views(torch.zeros_like(batch.images[0]), batch.intrinsics[0], batch.T_ego_from_cam[0], batch.camera_names,
                  GRID, scale=1)
    create_task("drivable", SETUP).draw(views, full.bool())
    from hydranet.viz import DRIVABLE_COLOR, REGION_ALPHA

    px = np.asarray(views.cameras[0], dtype=np.float64)[0, 0]
    assert np.allclose(px, np.array(DRIVABLE_COLOR) * REGION_ALPHA, atol=1)
