"""Every task draws its ground truth and its predictions onto ``hydranet.viz.Views``, in different colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tasks_synthetic import GRID, context, make_batch, perfect_outputs

from hydranet.tasks import create_task
from hydranet.tasks.common import GT_COLOR, PRED_COLOR
from hydranet.viz import Views

torch.set_num_threads(1)

ALL = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic", "objects3d")


def _pixels(views: Views) -> np.ndarray:
    return np.concatenate([np.asarray(im).reshape(-1, 3) for im in [*views.cameras, views.bev]])


def _has_color(views: Views, color: tuple[int, int, int]) -> bool:
    return bool((_pixels(views) == np.array(color)).all(-1).any())


@pytest.mark.parametrize("name", ALL)
def test_draw_changes_the_picture_and_tells_gt_from_prediction(name):
    batch = make_batch(1)
    task = create_task(name)
    task.build_head(context())
    decoded = task.decode(perfect_outputs(name, batch), batch)[0]
    target = task.targets(batch)[0]
    blank = _pixels(Views.from_batch(batch, 0, GRID, scale=1))
    gt_views, pred_views = Views.from_batch(batch, 0, GRID, scale=1), Views.from_batch(batch, 0, GRID, scale=1)
    task.draw(gt_views, target, ground_truth=True)
    task.draw(pred_views, decoded, ground_truth=False)
    gt_px, pred_px = _pixels(gt_views), _pixels(pred_views)
    assert (gt_px != blank).any() and (pred_px != blank).any()
    assert (gt_px != pred_px).any()  # same geometry, different styling
    if name in ("detection2d", "objects3d"):  # outlines in exact colours (masks are alpha-blended)
        assert _has_color(gt_views, GT_COLOR) and not _has_color(gt_views, PRED_COLOR)
        assert _has_color(pred_views, PRED_COLOR) and not _has_color(pred_views, GT_COLOR)
    image = pred_views.compose(title=name)
    assert image.width > 0 and image.height > 0
    task.draw(pred_views, None)  # an absent label draws nothing and does not fail
