"""Masks and depth drawn as ground truth over predictions (``predict``/``infer --ground-truth``)."""

import numpy as np
import torch

from hydranet.geometry import BevGrid
from hydranet.viz.canvas import Canvas
from hydranet.viz.maps import draw_depth, draw_mask


def _canvas() -> Canvas:
    images = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    return Canvas(images, torch.eye(3)[None], torch.eye(4)[None], ["cam"], BevGrid((-8.0, 8.0), (-8.0, 8.0), 1.0),
                  scale=1)


def test_ground_truth_over_predictions_is_an_outline_and_dots():
    """A filled square drawn as ground truth over predictions colours only its edge, opaque in the class colour,
    and leaves the inside (the prediction's fill) as it was; dense depth becomes sparse dots on the same scale.
    Drawn alone (``show``), the square is filled."""
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 4:12, 4:12] = True
    views = _canvas()
    views.truth_over_predictions = True
    draw_mask(views, mask, (0, 0, 255))
    pixels = np.asarray(views.cameras[0])
    edge = np.zeros((16, 16), bool)
    edge[4:12, 4:12] = True
    edge[5:11, 5:11] = False
    assert (pixels[edge] == (0, 0, 255)).all() and (pixels[~edge] == 100).all()
    filled = _canvas()
    draw_mask(filled, mask, (0, 0, 255))
    inside = np.asarray(filled.cameras[0])[5:11, 5:11]
    assert (inside[..., 2] > 100).all() and (inside[..., 0] < 100).all()  # blended blue, not the photo
    depth = _canvas()
    depth.truth_over_predictions = True
    draw_depth(depth, torch.full((1, 16, 16), 10.0))
    changed = (np.asarray(depth.cameras[0]) != 100).any(-1)
    assert 0 < changed.sum() < 16 * 16 / 4  # dots, not a dense overlay


def test_the_bev_truth_note_speaks_of_a_prediction_only_when_one_is_under_it():
    """Before: every ground-truth BEV map said "the filled areas are the prediction", in the report's
    ground-truth-only panel too, where nothing filled was a prediction."""
    from hydranet.tasks import create_task
    from hydranet.viz.maps import GROUND_TRUTH_BEV

    task = create_task("bev_semantic")
    label = torch.zeros(len(task.classes), 16, 16, dtype=torch.uint8)
    label[0, 4:12, 4:12] = 1
    alone = _canvas()
    task.draw(alone, label, ground_truth=True)
    assert GROUND_TRUTH_BEV not in alone.notes
    over = _canvas()
    over.truth_over_predictions = True
    task.draw(over, label, ground_truth=True)
    assert GROUND_TRUTH_BEV in over.notes
