"""Online 3D tracking: a track's velocity beats a noisy velocity head, ids persist and end, the world/ego frames
are handled, bad input is refused. The evaluator and suite runner scoring tracked velocity on video suites:
tests/eval/test_eval_sequence.py."""

import math

import pytest
import torch

from hydranet.eval import ObjectTracker, SequenceTrackers, TrackerOptions, greedy_assignment

DT = 0.1


def pose(x: float, y: float, yaw: float) -> torch.Tensor:
    T = torch.eye(4)
    T[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    T[0, 3], T[1, 3] = x, y
    return T


def detections(world_xy: list[tuple[float, float]], classes: list[int], T: torch.Tensor, head_v: torch.Tensor,
               noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boxes at ``world_xy`` seen from ego pose ``T`` (centres + ``noise`` m), with velocity head ``head_v``."""
    R, t = T[:2, :2], T[:2, 3]
    ego = (torch.tensor(world_xy).reshape(-1, 2) - t) @ R + noise  # world -> ego: Rᵀ (p - t)
    boxes = torch.zeros(len(world_xy), 7)
    boxes[:, :2] = ego
    boxes[:, 3:6] = torch.tensor([4.0, 1.8, 1.5])
    return {"boxes": boxes, "velocity": head_v, "classes": torch.tensor(classes), "scores": torch.ones(len(classes))}


def test_track_velocity_beats_a_noisy_head_from_a_turning_ego():
    # A car drives +x at 8 m/s in the world; the ego drives and turns; the head says nothing useful (0 m/s).
    g = torch.Generator().manual_seed(0)
    tracker = ObjectTracker()
    ids = []
    for k in range(20):
        T = pose(2.0 * k * DT, 0.5 * k * DT, 0.05 * k)
        car = (10.0 + 8.0 * k * DT, 3.0)
        out = tracker.update(detections([car], [0], T, torch.zeros(1, 2), 0.3 * torch.randn(1, 2, generator=g)),
                             T, k * DT)
        ids.append(int(out["track_id"][0]))
        v_world = out["velocity"][0] @ T[:2, :2].T  # ego axes -> world
    assert ids == [ids[0]] * 20  # one track all along
    assert torch.allclose(v_world, torch.tensor([8.0, 0.0]), atol=1.0), v_world
    assert out["boxes"].shape == (1, 7) and torch.equal(out["classes"], torch.tensor([0]))


def test_a_static_object_reads_zero_velocity_from_a_moving_ego():
    tracker = ObjectTracker()
    for k in range(15):
        T = pose(10.0 * k * DT, 0.0, 0.0)  # ego at 10 m/s; the cone stands still
        out = tracker.update(detections([(30.0, 2.0)], [3], T, torch.tensor([[3.0, 0.0]]), torch.zeros(1, 2)), T,
                             k * DT)
    assert float(out["velocity"].norm()) < 0.3  # the head's 3 m/s is outvoted by the track


def test_classes_do_not_swap_and_tracks_end_after_max_misses():
    tracker = ObjectTracker(TrackerOptions(max_misses=1))
    T = torch.eye(4)
    first = tracker.update(detections([(5.0, 0.0), (5.5, 0.0)], [0, 2], T, torch.zeros(2, 2), torch.zeros(2, 2)), T,
                           0.0)
    # The pedestrian (class 2) now stands where the car was: it keeps its own track, not the car's.
    second = tracker.update(detections([(5.0, 0.0)], [2], T, torch.zeros(1, 2), torch.zeros(1, 2)), T, DT)
    assert int(second["track_id"][0]) == int(first["track_id"][1])
    # The car is missed twice (more than max_misses=1): it comes back as a new track.
    tracker.update(detections([], [], T, torch.zeros(0, 2), torch.zeros(0, 2)), T, 2 * DT)
    back = tracker.update(detections([(5.0, 0.0)], [0], T, torch.zeros(1, 2), torch.zeros(1, 2)), T, 3 * DT)
    assert int(back["track_id"][0]) not in first["track_id"].tolist()


def test_a_box_scores_as_its_track_a_moving_average_of_its_detections():
    tracker = ObjectTracker(TrackerOptions(score_smoothing=0.8))
    T = torch.eye(4)
    expected = None
    for k, score in enumerate([0.9, 0.2, 0.5, 0.25]):
        d = detections([(5.0, 0.0)], [0], T, torch.zeros(1, 2), torch.zeros(1, 2)) | {"scores": torch.tensor([score])}
        out = tracker.update(d, T, k * DT)
        expected = score if expected is None else 0.8 * expected + 0.2 * score
        assert float(out["scores"][0]) == pytest.approx(expected)
    # Below a 0.3 drawing threshold on its own, the long-seen box stays above it as its track's; a box that starts a
    # track of its own keeps its detection's score.
    assert float(out["scores"][0]) > 0.5
    d = detections([(5.0, 0.0), (20.0, 5.0)], [0, 0], T, torch.zeros(2, 2), torch.zeros(2, 2))
    out = tracker.update(d | {"scores": torch.tensor([0.6, 0.35])}, T, 4 * DT)
    assert float(out["scores"][1]) == pytest.approx(0.35)
    assert out["scores"].dtype == torch.float32


def test_without_smoothing_every_box_keeps_its_own_score():
    tracker = ObjectTracker(TrackerOptions(score_smoothing=0.0))
    T = torch.eye(4)
    for k, score in enumerate([0.9, 0.2, 0.5]):
        d = detections([(5.0, 0.0)], [0], T, torch.zeros(1, 2), torch.zeros(1, 2)) | {"scores": torch.tensor([score])}
        assert torch.equal(tracker.update(d, T, k * DT)["scores"], torch.tensor([score]))


def test_bad_input_is_refused_with_a_clear_error():
    tracker = ObjectTracker()
    T = torch.eye(4)
    d = detections([(5.0, 0.0)], [0], T, torch.zeros(1, 2), torch.zeros(1, 2))
    tracker.update(d, T, 1.0)
    with pytest.raises(ValueError, match="does not follow"):
        tracker.update(d, T, 1.0)
    with pytest.raises(ValueError, match="non-finite value"):
        tracker.update(d, torch.full((4, 4), float("nan")), 2.0)
    with pytest.raises(ValueError, match=r"\[4, 4\] pose, got shape \[3, 3\]"):
        tracker.update(d, torch.eye(3), 2.0)
    with pytest.raises(ValueError, match=r"expected boxes \[M, 7\]"):
        tracker.update(dict(d, boxes=torch.zeros(1, 5)), T, 2.0)
    with pytest.raises(ValueError, match=r"expected boxes"):
        tracker.update(dict(d, velocity=torch.zeros(3, 2)), T, 2.0)
    with pytest.raises(ValueError, match="lack \\['velocity'\\]"):
        tracker.update({k: v for k, v in d.items() if k != "velocity"}, T, 2.0)
    with pytest.raises(ValueError, match="non-finite"):
        tracker.update(dict(d, velocity=torch.tensor([[float("nan"), 0.0]])), T, 2.0)
    with pytest.raises(ValueError, match="non-finite box, velocity or score"):
        tracker.update(dict(d, scores=torch.tensor([float("nan")])), T, 2.0)
    with pytest.raises(ValueError, match=r"scores \[M\]"):
        tracker.update(dict(d, scores=torch.ones(2)), T, 2.0)
    tracker.reset()
    tracker.update(d, T, 0.0)  # a new sequence may start its clock anywhere
    with pytest.raises(ValueError):
        TrackerOptions(gate_m=0.0)
    with pytest.raises(ValueError, match="score_smoothing"):
        TrackerOptions(score_smoothing=1.0)


def test_sequence_trackers_restart_at_a_new_scene():
    trackers = SequenceTrackers()
    T = torch.eye(4)[None]
    d = [detections([(5.0, 0.0)], [0], T[0], torch.zeros(1, 2), torch.zeros(1, 2))]
    a = trackers(d, ["s0"], torch.tensor([0]), T, torch.tensor([0.0]))
    b = trackers(d, ["s0"], torch.tensor([1]), T, torch.tensor([DT]))
    c = trackers(d, ["s1"], torch.tensor([0]), T, torch.tensor([0.0]))  # would be a time error without the restart
    assert int(a[0]["track_id"][0]) == int(b[0]["track_id"][0]) == int(c[0]["track_id"][0]) == 0



def test_greedy_assignment_takes_the_cheapest_pairs_one_to_one():
    # track 0 is closest to detection 1; detection 1 is then taken, so track 1 gets its second choice, and track 2,
    # whose only candidate is taken, stays unmatched (not a globally optimal assignment: CenterPoint's greedy rule)
    pairs = [(0.5, 0, 1), (0.9, 0, 0), (0.7, 1, 1), (1.2, 1, 2), (0.8, 2, 1)]
    assert greedy_assignment(pairs) == [(0, 1), (1, 2)]
    assert greedy_assignment([]) == []
