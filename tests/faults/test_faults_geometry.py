"""Class 5 of issue 22: geometry and labels are checked where they enter, never stored as given.

Every sample any source produces is checked when it is written or read (``Sample.validate`` ->
``hydranet.data.sample.check_sample_content``: rigid poses, pinhole K, boxes that are boxes); readers name
``file:line field`` for what only they can see (KITTI ``R0_rect``, a mask of another size, a frame or queue
entry listed twice, a truncated lidar file). Each converter's hostile inputs end in exit 2, one line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from faults_kit import T_CAM, H, K, W, cli, error_line, frame_line, write_bdd, write_frames, write_kitti
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hydranet.data.sample import RIGID_TOLERANCE, check_sample_content
from hydranet.geometry import make_transform

SCALED = [[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1.0]]
SHEARED = [[0.0, 0.3, 1.0, 1.5], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.4], [0.0, 0.0, 0.0, 1.0]]
MIRRORED = [[0.0, 0.0, 1.0, 1.5], [1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.4], [0.0, 0.0, 0.0, 1.0]]
K_OTHER = [[40.0, 0.0, 100.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]]  # cx = 100 on a 48-wide image
FRAMES_CASES = {
    "non-rigid T_world_from_ego": (dict(T_world_from_ego=SCALED), ":2: T_world_from_ego"),
    "sheared T_ego_from_cam": (dict(cameras={"front": {"image": "img1.png", "K": K, "T_ego_from_cam": SHEARED}}),
                               "T_ego_from_cam"),
    "mirrored T_ego_from_cam": (dict(cameras={"front": {"image": "img1.png", "K": K, "T_ego_from_cam": MIRRORED}}),
                                "T_ego_from_cam"),
    "inverted 2D box": (dict(labels={"detection2d": {"boxes": [[20, 3, 2, 15]], "classes": ["car"],
                                                     "camera": ["front"]}}), "inverted"),
    "negative 3D size": (dict(labels={"objects3d": {"boxes": [[10, 0, 0.8, -4.5, 1.9, 1.6, 0]],
                                                    "classes": ["car"]}}), "sizes must be > 0"),
    "zero 3D size": (dict(labels={"objects3d": {"boxes": [[10, 0, 0.8, 4.5, 0.0, 1.6, 0]], "classes": ["car"]}}),
                     "sizes must be > 0"),
    "mask of another size": (dict(labels={"drivable": {"front": "mask.png"}}), "would be stretched"),
    "duplicate frame": (dict(frame_index=0), "listed twice"),
    "JSON nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, "nested more than 100 levels"),
    # a K for another resolution: before, accepted silently (every projection off by the scale)
    "principal point outside the image": (dict(cameras={"front": {"image": "img1.png", "K": K_OTHER,
                                                                  "T_ego_from_cam": T_CAM}}),
                                          "cameras.front.K: principal point (cx, cy) = (100, 12) does not lie in the "
                                          f"{W}x{H} (WxH) image"),
    # before: "sample 000000001: rig differs from the first sample", from the shard writer, with no file:line
    "every image smaller than the rig": (dict(cameras={"front": {"image": "mask.png", "T_ego_from_cam": T_CAM,
                                                                 "K": [[20.0, 0, 12.0], [0, 20.0, 6.0], [0, 0, 1]]}}),
                                         f"cameras.front.image: image sizes (WxH) front {W // 2}x{H // 2}; the rig "
                                         f"(line 1) is {W}x{H}"),
}


@pytest.mark.parametrize("case", list(FRAMES_CASES))
def test_frames_converter_refuses_hostile_lines(tmp_path, case):
    over, expected = FRAMES_CASES[case]
    second = over if isinstance(over, str) else frame_line(1, **over)
    index = write_frames(tmp_path / "fleet", [frame_line(0), second])
    Image.fromarray(np.zeros((H // 2, W // 2), np.uint8)).save(tmp_path / "fleet" / "mask.png")
    res = cli("convert", "frames", "--index", index, "--out", tmp_path / "out", code=2)
    line = error_line(res)
    assert expected in line and "frames.jsonl:2" in line, line
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing stored as given


def test_frames_converter_accepts_the_honest_version(tmp_path):
    index = write_frames(tmp_path / "fleet", [frame_line(0), frame_line(1)])
    cli("convert", "frames", "--index", index, "--out", tmp_path / "out", code=0)
    cli("data-info", tmp_path / "out", "--verify", "--deep", code=0)


@pytest.mark.parametrize("R0,velodyne,expected", [
    (np.diag([1.0, 1.0, 1.0]) * 1.2, None, "R0_rect: not a rotation"),
    (np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), None, "R0_rect: not a rotation"),
    (np.diag([1.0, 1.0, -1.0]), None, "R0_rect: not a rotation"),  # a mirror: det -1
    (np.eye(3), np.arange(4 * 100 + 3, dtype=np.float32).tobytes(), "not a multiple of 4"),
], ids=["scaled", "sheared", "mirrored", "truncated lidar"])
def test_kitti_converter_refuses_hostile_calibration_and_lidar(tmp_path, R0, velodyne, expected):
    root = write_kitti(tmp_path / "kitti", R0, velodyne)
    res = cli("convert", "kitti", "--root", root, "--out", tmp_path / "out", code=2)
    line = error_line(res)
    assert expected in line and ("000001.txt" in line or "000001.bin" in line), line


@pytest.mark.parametrize("frames,mask_hw,expected", [
    ([{"name": "a.jpg", "labels": []}, {"name": "a.jpg", "labels": []}], None, "listed twice"),
    ([{"name": "a.jpg", "labels": []}], (H * 2, W), "would be stretched"),
    ([{"name": "a.jpg", "labels": [{"category": "car", "box2d": {"x1": 30, "y1": 2, "x2": 10, "y2": 9}}]}], None,
     "invalid box2d [30.0, 2.0, 10.0, 9.0]"),
], ids=["duplicate frame", "mask of another size", "inverted box"])
def test_bdd100k_converter_refuses_hostile_labels(tmp_path, frames, mask_hw, expected):
    root = write_bdd(tmp_path / "bdd", frames, mask_hw)
    res = cli("convert", "bdd100k", "--root", root, "--out", tmp_path / "out", code=2)
    assert expected in error_line(res)


def test_a_queue_listing_a_frame_twice_or_outside_the_pool_is_refused(tmp_path, dataset):
    queue = tmp_path / "q"
    queue.mkdir()
    row = {"rank": 1, "index": 0, "frame_id": "x#0"}
    (queue / "queue.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "rank": 2}) + "\n")
    res = cli("label", "--queue", queue, "--data", dataset, "--out", tmp_path / "l", code=2)
    assert "queue.jsonl:2: index 0 is queued twice (first on line 1)" in " ".join(res.output.split())
    (queue / "queue.jsonl").write_text(json.dumps({**row, "index": 99}) + "\n")
    res = cli("label", "--queue", queue, "--data", dataset, "--out", tmp_path / "l", code=2)
    assert "outside the pool (2 frames)" in " ".join(res.output.split())
    (queue / "queue.jsonl").write_text("[" * 100_000 + "\n")
    res = cli("label", "--queue", queue, "--data", dataset, "--out", tmp_path / "l", code=2)
    assert "nested more than 100 levels" in " ".join(res.output.split())


@pytest.fixture(scope="module")
def world_sample():
    from faults_kit import WORLD

    from hydranet.world import SyntheticWorld, WorldConfig

    return SyntheticWorld(WorldConfig(**WORLD))[0]


@settings(max_examples=40, deadline=None)
@given(axis=st.sampled_from(["scale", "shear", "mirror", "rotate"]), amount=st.floats(1e-4, 0.5),
       which=st.integers(-1, 7), where=st.integers(0, 2))
def test_every_pose_must_be_rigid_to_be_stored(world_sample, axis, amount, which, where):
    """Perturb one pose of a real sample: refused exactly when it stops being rigid beyond the tolerance."""
    s = world_sample
    T = (s.T_world_from_ego if which < 0 else s.T_ego_from_cam[which]).clone()
    if axis == "scale":
        T[where, where] *= 1 + amount
    elif axis == "shear":
        T[where, (where + 1) % 3] += amount
    elif axis == "mirror":
        T[:3, where] *= -1
    else:  # a true rotation stays rigid, however large
        c, n = math.cos(amount * 6), math.sin(amount * 6)
        T = T @ make_transform(torch.tensor([[c, -n, 0.0], [n, c, 0.0], [0.0, 0.0, 1.0]]), torch.zeros(3))
    R = T[:3, :3].double()
    err = max(float((R.T @ R - torch.eye(3, dtype=R.dtype)).abs().max()), abs(float(torch.linalg.det(R)) - 1))
    poses = s.T_ego_from_cam.clone()
    world = s.T_world_from_ego.clone()
    if which < 0:
        world = T
    else:
        poses[which] = T
    probe = type(s)(**{**s.__dict__, "T_world_from_ego": world, "T_ego_from_cam": poses})
    try:
        check_sample_content(probe, "probe")
        refused = False
    except ValueError as e:
        refused = True
        assert "not a rigid transform" in str(e) and ("T_world_from_ego" in str(e) or f"[{which}]" in str(e))
    assert refused == (err > RIGID_TOLERANCE), (axis, amount, err)


@pytest.mark.parametrize("entry, value", [((0, 1), 0.5), ((1, 0), 0.5), ((0, 0), 0.0), ((1, 1), -1.0),
                                          ((2, 0), 1e-3), ((2, 2), 2.0)])
def test_one_pinhole_rule_for_samples_cameras_and_readers(world_sample, tmp_path, entry, value):
    """``hydranet.geometry.check_intrinsics`` is the one pinhole rule: a skewed or non-pinhole K is refused by the
    same words in a stored ``Sample``, a declared ``Camera`` and a ``frames.jsonl`` line (the projection reads
    fx, fy, cx, cy only, so a skew would be silently dropped)."""
    from hydranet.setup import Camera

    s = world_sample
    K_bad = s.intrinsics.clone()
    K_bad[2][entry] = value
    probe = type(s)(**{**s.__dict__, "intrinsics": K_bad})
    with pytest.raises(ValueError, match=r"probe: intrinsics\[2\] \(camera \w+\): not a pinhole K"):
        check_sample_content(probe, "probe")
    K_list = K_bad[2].double().tolist()
    with pytest.raises(ValueError, match="K: not a pinhole K"):
        Camera(name="c", image_size=(H, W), K=K_list, T_ego_from_cam=T_CAM)
    k = [row[:] for row in K]
    k[entry[0]][entry[1]] = value
    index = write_frames(tmp_path / "src", [frame_line(cameras={"front": {"image": "img0.png", "K": k,
                                                                         "T_ego_from_cam": T_CAM}})])
    res = cli("convert", "frames", "--index", index, "--out", tmp_path / "out", code=2)
    assert "frames.jsonl:1: cameras.front.K: not a pinhole K" in " ".join(res.output.split())
