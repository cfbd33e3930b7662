"""Occlusion persistence and flicker on hand-made sequences whose answers are known."""

import numpy as np
import pytest
import torch

from hydranet.eval.sequence import clip_indices
from hydranet.metrics.temporal import TemporalDetection3DMetric, TemporalTrafficLightMetric

CLASSES = ("car", "truck", "pedestrian", "cone", "traffic_light")


def gt(tracks, visible, xs=None):
    n = len(tracks)
    xs = xs if xs is not None else [5.0 * (i + 1) for i in range(n)]
    boxes = torch.tensor([[x, 0.0, 0.8, 4.0, 2.0, 1.6, 0.0] for x in xs]).reshape(-1, 7)
    return {"boxes": boxes, "classes": torch.zeros(n, dtype=torch.long), "velocity": torch.zeros(n, 2),
            "track_id": torch.tensor(tracks), "visible": torch.tensor(visible, dtype=torch.float32)}


def pred(xs, scores):
    n = len(xs)
    return {"boxes": torch.tensor([[x, 0.0, 0.8, 4.0, 2.0, 1.6, 0.0] for x in xs]).reshape(-1, 7),
            "scores": torch.tensor(scores, dtype=torch.float32), "classes": torch.zeros(n, dtype=torch.long),
            "velocity": torch.zeros(n, 2)}


def test_occluded_recall_counts_objects_hidden_now_but_seen_recently():
    m = TemporalDetection3DMetric(CLASSES, history=2, grid_extent=(-32, 32, -32, 32))
    seq = [
        # frame 0: both visible, both found
        (gt([1, 2], [0.9, 0.8]), pred([5.0, 10.0], [0.9, 0.9])),
        # frame 1: track 2 occluded (seen in frame 0) and still found; track 1 visible, found
        (gt([1, 2], [0.9, 0.0]), pred([5.0, 10.0], [0.9, 0.9])),
        # frame 2: track 2 still occluded (seen in frame 0, within history 2) and missed (low score)
        (gt([1, 2], [0.9, 0.0]), pred([5.0, 10.0], [0.9, 0.1])),
        # frame 3: track 2 occluded, last seen 3 frames ago: outside history, not counted
        (gt([1, 2], [0.9, 0.0]), pred([5.0], [0.9])),
    ]
    for k, (t, p) in enumerate(seq):
        m.update([p], [dict(t, sequence=("s", k))])
    out = m.compute()
    assert out["occluded_objects"] == 2 and out["occluded_recall"] == pytest.approx(0.5)
    assert out["visible_recall"] == pytest.approx(1.0)
    # Flicker: track 1 found in all 4 frames (3 pairs, 0 toggles); track 2 found, found, missed, missed
    # (2 pairs with a detection, 1 toggle; missed-missed does not count).
    assert out["flicker"] == pytest.approx(1 / 5)
    assert "map" in out and "ave" in out


def test_a_detector_that_finds_nothing_has_no_flicker_score():
    m = TemporalDetection3DMetric(CLASSES, history=2, grid_extent=(-32, 32, -32, 32))
    for k in range(4):
        m.update([pred([], [])], [dict(gt([1, 2], [0.9, 0.9]), sequence=("s", k))])
    assert np.isnan(m.compute()["flicker"])  # not a perfect 0


def test_no_sequence_info_means_the_plain_detection_metric_and_a_gap_restarts_history():
    plain = TemporalDetection3DMetric(CLASSES)
    plain.update([pred([5.0], [0.9])], [gt([1], [0.9])])
    assert "flicker" not in plain.compute()
    m = TemporalDetection3DMetric(CLASSES, history=5)
    m.update([pred([5.0], [0.9])], [dict(gt([1], [0.9]), sequence=("s", 0))])
    m.update([pred([], [])], [dict(gt([1], [0.0]), sequence=("s", 5))])  # not consecutive: no history
    out = m.compute()
    assert out["occluded_objects"] == 0 and np.isnan(out["flicker"])
    # compute_frames over a subset (the gate's bootstrap) sums only those frames' records.
    assert m.compute_frames([0])["visible_recall"] == 1.0
    with pytest.raises(ValueError, match="track_id"):
        m.update([pred([], [])], [{"boxes": torch.zeros(0, 7), "classes": torch.zeros(0, dtype=torch.long),
                                   "sequence": ("s", 6)}])


def test_traffic_light_flicker_follows_the_reported_state_per_light():
    m = TemporalTrafficLightMetric()
    box = torch.tensor([[10.0, 10.0, 20.0, 30.0]])
    target = {"boxes": box, "camera": torch.tensor([0]), "state": torch.tensor([0]), "track_id": torch.tensor([7]),
              "lane": torch.tensor([0])}
    states = [0, 0, 2, 2, 0]  # red, red, green, green, red: 2 toggles in 4 pairs
    for k, st in enumerate(states):
        p = {"boxes": box, "scores": torch.tensor([0.9]), "camera": torch.tensor([0]), "state": torch.tensor([st])}
        m.update([p], [dict(target, sequence=("s", k))])
    out = m.compute()
    assert out["flicker"] == pytest.approx(0.5) and out["accuracy"] == pytest.approx(3 / 5)
    assert m.confusion().sum() == 5


def test_clip_indices_end_at_the_anchor_inside_its_scene():
    assert clip_indices([25, 41], 20, 4) == [[22, 23, 24, 25], [40, 41, 42, 43]]
    assert clip_indices([3], 2, 4) == [[2, 3]]


def test_world_objects3d_visibility_agrees_with_detection2d():
    from hydranet.world import SyntheticWorld, WorldConfig

    s = SyntheticWorld(WorldConfig(seed=2, num_scenes=1, frames_per_scene=1, setup={"image_size": (64, 128)},
                                   traffic_density=2.0))[0]
    obj, det = s.labels["objects3d"], s.labels["detection2d"]
    seen = set(det["track_id"].tolist())
    for t, v in zip(obj["track_id"].tolist(), obj["visible"].tolist(), strict=True):
        assert (v > 0) == (t in seen)
    assert (obj["visible"] == 0).any() and (obj["visible"] > 0).any()
