"""Oracle labels, clip tracking/smoothing/voting, auto labels with provenance, label quality."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hydranet.datasets import open_dataset
from hydranet.engine.autolabel import AutoLabelConfig, autolabel_items, clip_indices
from hydranet.engine.label import LabelError, label_cost, oracle_items, write_labelled
from hydranet.engine.pool import load_mining_model, open_pool
from hydranet.engine.quality import autolabel_quality
from hydranet.engine.track import (
    Track,
    boxes_to_ego,
    boxes_to_world,
    smooth_track,
    track_lights,
    track_objects,
)
from hydranet.geometry import yaw_transform


def _queue(pool, indices):
    return [{"rank": k + 1, "index": i, "frame_id": f"{pool[i].scene_id}#{pool[i].frame_index}"}
            for k, i in enumerate(indices)]


def test_oracle_writes_the_world_ground_truth_and_its_cost(world_yaml, tmp_path):
    pool = open_pool(str(world_yaml), with_labels=True)
    res = write_labelled(tmp_path / "lab", oracle_items(_queue(pool, [3, 7]), pool), pool, {"labeller": "oracle"})
    ds = open_dataset(tmp_path / "lab")
    assert len(ds) == 2 and res["frames"] == 2
    got, want = ds[1], pool[7]
    assert got.scene_id == want.scene_id and torch.equal(got.labels["drivable"], want.labels["drivable"])
    assert torch.equal(got.labels["objects3d"]["boxes"], want.labels["objects3d"]["boxes"])
    recs = [json.loads(x) for x in (tmp_path / "lab" / "labels.jsonl").read_text().splitlines()]
    assert recs[1]["cost"] == label_cost(want.labels) and recs[1]["provenance"] == {"labeller": "oracle"}
    assert res["cost"]["total"] == sum(r["cost"]["total"] for r in recs) > 2


def test_oracle_refuses_a_queue_from_another_pool(world_yaml, tmp_path):
    pool = open_pool(str(world_yaml), with_labels=True)
    bad = [{"rank": 1, "index": 3, "frame_id": "elsewhere#0"}]
    with pytest.raises(LabelError, match="is this the pool the queue was mined from"):
        write_labelled(tmp_path / "lab", oracle_items(bad, pool), pool, {})


def test_world_and_ego_boxes_round_trip():
    T = yaw_transform(10.0, -3.0, 0.7)
    boxes = torch.tensor([[5.0, 1.0, 0.8, 4.0, 2.0, 1.5, 0.2]])
    back = boxes_to_ego(boxes_to_world(boxes, T), T)
    assert torch.allclose(back, boxes, atol=1e-5)


def test_tracking_smooths_jitter_and_fills_an_occlusion_gap():
    gen = torch.Generator().manual_seed(0)
    truth = [torch.tensor([2.0 * f, 5.0]) for f in range(9)]  # 2 m/frame along x
    frames = []
    for f in range(9):
        if f == 4:  # occluded
            frames.append((torch.zeros(0, 7, dtype=torch.float64), torch.zeros(0).long(), torch.zeros(0)))
            continue
        noise = torch.randn(2, generator=gen) * 0.3
        box = torch.tensor([[*(truth[f] + noise).tolist(), 0.8, 4.0, 2.0, 1.5, 0.0]], dtype=torch.float64)
        frames.append((box, torch.tensor([0]), torch.tensor([0.9])))
    tracks = track_objects(frames, gate_m=3.0)
    assert len(tracks) == 1 and len(tracks[0].frames) == 8
    smooth = smooth_track(tracks[0], window=3, max_gap=2)
    assert sorted(smooth) == list(range(9)) and smooth[4][3] is True  # gap filled, flagged as filled
    raw = sum(float((b[:2] - truth[f]).norm()) for f, b in zip(tracks[0].frames, tracks[0].boxes, strict=True))
    fit = sum(float((smooth[f][0][:2] - truth[f]).norm()) for f in tracks[0].frames)
    assert fit < 0.7 * raw
    assert float((smooth[4][0][:2] - truth[4]).norm()) < 0.5
    assert smooth[4][1][0].item() == pytest.approx(2.0, abs=0.2)  # velocity in m/frame


def test_a_wider_velocity_window_reads_motion_through_localisation_noise():
    gen = torch.Generator().manual_seed(1)
    frames = [(torch.tensor([[1.5 * f + float(torch.randn(1, generator=gen)) * 0.5, 0.0, 0.8, 4.0, 2.0, 1.5, 0.0]],
                            dtype=torch.float64), torch.tensor([0]), torch.tensor([0.9])) for f in range(21)]
    track = track_objects(frames, gate_m=4.0)[0]
    err = {w: sum(abs(float(v[1][0]) - 1.5) for v in smooth_track(track, window=3, velocity_window=w).values())
           for w in (3, 10)}
    assert err[10] < 0.6 * err[3]
    default = smooth_track(track, window=3)[10][1]
    assert default.tolist() == smooth_track(track, window=3, velocity_window=3)[10][1].tolist()


def test_light_states_are_voted_over_the_window():
    box = torch.tensor([[10.0, 10.0, 14.0, 20.0]])
    states = [0, 0, 0, 2, 0, 0, 0]  # one frame flips to green
    frames = [(box, torch.tensor([1]), torch.tensor([s]), torch.tensor([0.8]), torch.tensor([0])) for s in states]
    tracks = track_lights(frames)
    assert len(tracks) == 1 and tracks[0].camera == 1
    assert [tracks[0].vote(f, 2) for f in range(7)] == [0] * 7
    assert Track([0, 1], [box[0], box[0]], [0.9, 0.2], [2, 0]).vote() == 2  # score-weighted


def test_clip_indices_stay_inside_the_scene(world_yaml, tmp_path):
    pool = open_pool(str(world_yaml))
    assert clip_indices(pool, 6, 2) == [5, 6, 7, 8]
    assert clip_indices(pool, 5, 20) == [5, 6, 7, 8, 9]  # 5 frames per scene
    labelled = open_pool(str(world_yaml), with_labels=True)  # any source: walked by scene_id/frame_index
    write_labelled(tmp_path / "seq", oracle_items(_queue(labelled, [5, 6, 7, 8, 9, 10, 11]), labelled), labelled, {})
    shards = open_pool(str(tmp_path / "seq"))
    assert clip_indices(shards, 1, 20) == [0, 1, 2, 3, 4]
    assert clip_indices(shards, 1, 1) == [0, 1, 2]
    assert clip_indices(shards, 6, 20) == [5, 6]


def test_auto_labels_carry_confidence_and_provenance(checkpoint, world_yaml, tmp_path):
    pool = open_pool(str(world_yaml), with_labels=True)
    teacher = load_mining_model(checkpoint)
    cfg = AutoLabelConfig(min_score=0.0, min_confidence=0.0, clip_radius=2)
    res = write_labelled(tmp_path / "auto", autolabel_items(_queue(pool, [1, 6]), pool, teacher, "T", cfg), pool,
                         {"labeller": "auto"})
    ds = open_dataset(tmp_path / "auto")
    s = ds[0]
    assert res["cost"]["total"] == 0  # machine labels buy nothing
    for name in ("objects3d", "traffic_light", "detection2d"):
        lab = s.labels[name]
        assert "confidence" in lab and len(lab["confidence"]) == len(lab["boxes"]) > 0
    assert s.labels["drivable"].dtype == torch.uint8
    rec = json.loads((tmp_path / "auto" / "labels.jsonl").read_text().splitlines()[0])
    assert rec["provenance"]["labeller"] == "auto" and rec["provenance"]["smoothing"] is True
    assert rec["provenance"]["clip_frames"] == 4 and len(rec["provenance"]["trunk_hash"]) == 64
    assert 0.0 <= rec["confidence"]["drivable"] <= 1.0
    strict = AutoLabelConfig(min_score=0.0, min_confidence=0.0, clip_radius=2, min_frame_confidence=1.0)
    skipped: list[str] = []
    res = write_labelled(tmp_path / "strict", autolabel_items(_queue(pool, [1, 6]), pool, teacher, "T", strict,
                                                              skipped), pool, {})
    assert res["frames"] == 0 and len(skipped) == 2


def test_label_quality_reports_the_teacher_and_both_modes(checkpoint, world_yaml):
    pool = open_pool(str(world_yaml), with_labels=True)
    res = autolabel_quality(load_mining_model(checkpoint), pool, [1, 7],
                            AutoLabelConfig(min_score=0.0, min_confidence=0.0, clip_radius=2))
    assert res["frames"] == 2 and res["clips"] == 2
    # With no cut-off, single-frame labels are the teacher's own detections: the same score.
    assert res["teacher"]["objects3d"]["map"] == res["single_frame"]["objects3d"]["map"]
    for mode in ("teacher", "single_frame", "clip_smoothed"):
        assert set(res[mode]) == {"objects3d", "traffic_light", "drivable", "detection2d", "bev_semantic"}
        assert 0.0 <= res[mode]["drivable"]["miou"] <= 1.0
        assert not math.isnan(res[mode]["objects3d"]["map"])

