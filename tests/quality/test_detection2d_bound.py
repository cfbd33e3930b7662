"""benchmarks/detection2d_bound.py: an oracle detector whose only error is localisation noise scores COCO mAP 1
without noise, less with every added pixel, more when its boxes are ranked by their IoU than at random scores,
and larger images lose less to the same pixel noise."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("hydranet_detection2d_bound",
                                               ROOT / "benchmarks" / "detection2d_bound.py")
bound = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bound)


def _scores(size: tuple[int, int], centre: float, scale: float) -> dict[str, float]:
    targets, classes = bound.labels(3, size)
    return bound.noisy_map(targets, classes, 8, 0.25, centre, scale, np.random.default_rng(0))


def _map(size: tuple[int, int], centre: float, scale: float) -> float:
    return _scores(size, centre, scale)["map"]


def test_exact_boxes_score_one_and_noise_costs_map():
    assert _map((96, 192), 0.0, 0.0) == 1.0
    half, one = _map((96, 192), 0.5, 0.0), _map((96, 192), 1.0, 0.0)
    assert 0.05 < one < half < 0.9


def test_the_same_pixel_noise_costs_less_on_a_larger_image():
    assert _map((192, 384), 1.0, 0.0) > _map((96, 192), 1.0, 0.0)


def test_ranking_by_iou_bounds_random_scores():
    scores = _scores((96, 192), 1.0, 0.1)
    assert scores["map"] > scores["map_random"] > 0.0
