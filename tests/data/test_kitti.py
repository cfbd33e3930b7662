"""KITTI object reader: a fixture written in the official format, and the real frame 000008 when present."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hydranet.data.sample import OBJECT_CLASSES
from hydranet.data.sources import SourceConfigError, SourceError, open_source
from hydranet.data.sources.kitti import VELODYNE_HEIGHT, read_calib
from hydranet.geometry import box_corners, invert_transform, transform_points

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata" / "derived" / "kitti_object_000008"

def KittiObject(root, **options):
    # the synthetic sweeps here hold a point or two: below the real-sweep minimum (hydranet.limits)
    return open_source({"kind": "kitti", "root": str(root), "min_lidar_points": 1, **options})


# Velodyne (x fwd, y left, z up) -> camera (x right, y down, z fwd), no offset; camera 2 is 6 cm right of camera 0.
TR = [[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]]
K = [[700.0, 0, 600.0], [0, 700.0, 180.0], [0, 0, 1]]
T2 = [0.06, 0.0, 0.0]


def _row(m) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=float).ravel())


def write_kitti(root: Path, labels: list[str], size=(375, 1242), velodyne: np.ndarray | None = None) -> Path:
    d = root / "training"
    for sub in ("image_2", "calib", "label_2", "velodyne"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(d / "image_2" / "000001.png")
    P2 = np.concatenate([np.array(K), (np.array(K) @ np.array(T2))[:, None]], 1)
    text = [f"P0: {_row(np.concatenate([np.array(K), np.zeros((3, 1))], 1))}", f"P2: {_row(P2)}",
            f"R0_rect: {_row(np.eye(3))}", f"Tr_velo_to_cam: {_row(TR)}", f"Tr_imu_to_velo: {_row(np.eye(3, 4))}"]
    (d / "calib" / "000001.txt").write_text("\n".join(text) + "\n")
    (d / "label_2" / "000001.txt").write_text("\n".join(labels) + "\n")
    if velodyne is not None:
        velodyne.astype(np.float32).tofile(d / "velodyne" / "000001.bin")
    return root


# A car 10 m ahead, 2 m left, heading straight ahead (rotation_y = -pi/2), 4 x 1.8 x 1.5 m, on the ground.
CAR = "Car 0.00 0 -1.77 500.00 150.00 560.00 220.00 1.50 1.80 4.00 -2.00 1.73 10.00 -1.5708"


def test_box_lands_in_ego_frame_with_x_forward(tmp_path):
    ds = KittiObject(write_kitti(tmp_path, [CAR, "DontCare -1 -1 -10 1 2 3 4 -1 -1 -1 -1000 -1000 -1000 -10"]))
    s = ds[0]
    s.validate()
    box = s.labels["objects3d"]["boxes"][0]
    # Ego = Velodyne frame on the ground: the car's centre is 0.75 m up, 10 m ahead, 2 m left; yaw 0.
    torch.testing.assert_close(box, torch.tensor([10.0, 2.0, 0.75, 4.0, 1.8, 1.5, 0.0]), atol=1e-3, rtol=0)
    assert s.labels["objects3d"]["classes"].tolist() == [OBJECT_CLASSES.index("car")]
    assert ds.class_map.report() == {"kept": {"Car": 1}, "dropped": {"DontCare": 1}, "model_class": {"Car": "car"}}
    # The camera sits at the Velodyne's height; camera 2 is 6 cm left of camera 0 (P2's +0.06 m x offset).
    torch.testing.assert_close(s.T_ego_from_cam[0, :3, 3], torch.tensor([0.0, 0.06, VELODYNE_HEIGHT]))


def test_projection_with_K_and_T_matches_P2(tmp_path):
    s = KittiObject(write_kitti(tmp_path, [CAR]))[0]
    corners = box_corners(s.labels["objects3d"]["boxes"])[0]  # [8, 3] ego
    cam = transform_points(invert_transform(s.T_ego_from_cam[0]), corners)
    uv = cam @ s.intrinsics[0].T
    uv = uv[:, :2] / uv[:, 2:]
    # The same corners straight from the label through P2 (rectified camera-0 frame, y down).
    h, w, l, x, y, z, ry = 1.5, 1.8, 4.0, -2.0, 1.73, 10.0, -1.5708
    xs = np.array([l, l, -l, -l, l, l, -l, -l]) / 2
    zs = np.array([w, -w, -w, w, w, -w, -w, w]) / 2
    ys = np.array([0, 0, 0, 0, -h, -h, -h, -h])
    R = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    pts = (R @ np.stack([xs, ys, zs])).T + [x, y, z]
    P2 = np.concatenate([np.array(K), (np.array(K) @ np.array(T2))[:, None]], 1)
    p = np.concatenate([pts, np.ones((8, 1))], 1) @ P2.T
    expected = p[:, :2] / p[:, 2:]
    assert np.abs(np.sort(uv.numpy(), 0) - np.sort(expected, 0)).max() < 0.05


def test_resize_scales_K_and_2d_boxes_and_depth_is_sparse(tmp_path):
    # Two Velodyne points: on the car's front face centre and one behind the camera (dropped).
    velo = np.array([[8.0, 2.0, -1.0, 0.5], [-5.0, 0.0, 0.0, 0.1]])
    s = KittiObject(write_kitti(tmp_path, [CAR], velodyne=velo), image_size=(150, 496))[0]
    assert s.images.shape == (1, 3, 150, 496)
    sx, sy = 496 / 1242, 150 / 375
    torch.testing.assert_close(s.intrinsics[0, 0], torch.tensor([700 * sx, 0, 600 * sx]))
    torch.testing.assert_close(s.labels["detection2d"]["boxes"][0], torch.tensor([500 * sx, 150 * sy, 560 * sx,
                                                                                 220 * sy]))
    depth = s.labels["depth"][0]
    assert depth.shape == (150, 496) and int((depth > 0).sum()) == 1
    ds = KittiObject(tmp_path, image_size=(150, 496))
    assert all(ds.label_present(0, k) for k in ("depth", "objects3d", "detection2d"))
    assert not KittiObject(tmp_path, depth=False).label_present(0, "depth")
    assert float(depth.max()) == pytest.approx(8.0, abs=1e-4)  # z-depth along the camera axis
    v, u = (depth > 0).nonzero()[0].tolist()
    assert abs(u + 0.5 - (700 * (-2.0 + 0.06) / 8.0 + 600) * sx) < 1  # x_cam2 = x_rect + 0.06
    assert abs(v + 0.5 - (700 * 1.0 / 8.0 + 180) * sy) < 1


@pytest.mark.parametrize("bad, message", [
    ("Car 0.00 0 -1.77 500 150 560 220 1.5 1.8 4.0 -2.0 1.73 10.0", "14 fields"),
    ("Car 0.00 0 -1.77 500 150 560 220 1.5 nan 4.0 -2.0 1.73 10.0 0.1", "non-finite"),
    ("Car 0.00 0 -1.77 500 150 560 220 1.5 x 4.0 -2.0 1.73 10.0 0.1", "not a number"),
    ("Car 0.00 0 -1.77 560 150 500 220 1.5 1.8 4.0 -2.0 1.73 10.0 0.1", "inverted"),
    ("Car 0.00 0 -1.77 500 150 560 220 1.5 -1.8 4.0 -2.0 1.73 10.0 0.1", "negative dimension"),
])
def test_bad_label_lines_name_file_and_line(tmp_path, bad, message):
    ds = KittiObject(write_kitti(tmp_path, [CAR, bad]))
    with pytest.raises(SourceError, match=rf"label_2/000001.txt:2.*{message}"):
        ds[0]


def test_bad_calibration_names_the_entry(tmp_path):
    root = write_kitti(tmp_path, [CAR])
    path = root / "training" / "calib" / "000001.txt"
    path.write_text("\n".join(x for x in path.read_text().splitlines() if not x.startswith("R0_rect")))
    with pytest.raises(SourceError, match=r"000001.txt: missing calibration entries \['R0_rect'\]"):
        read_calib(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join("P2: " + " ".join(["0"] * 12) if x.startswith("P2") else x for x in lines) +
                    "\nR0_rect: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(SourceError, match=r"000001.txt: P2: not a pinhole K"):  # before: a singular solve
        read_calib(path)
    with pytest.raises(SourceError, match="no image_2"):
        KittiObject(tmp_path / "nowhere")
    with pytest.raises(SourceConfigError, match=r"imag_size: unknown field"):
        KittiObject(root, imag_size=[10, 10])
    with pytest.raises(SourceConfigError, match=r"kitti.class_map: \['Carr'\] are not classes of this dataset"):
        KittiObject(root, class_map={"Carr": "car"})
    with pytest.raises(ValueError, match=r"kitti.class_map.Car: 'auto' is not a model class"):
        KittiObject(root, class_map={"Car": "auto"})


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata is absent")
def test_real_frame_000008_boxes_project_onto_their_2d_boxes():
    ds = KittiObject(REAL)
    s = ds[0]
    s.validate()
    boxes = s.labels["objects3d"]["boxes"]
    assert len(boxes) == 6 and ds.class_map.report()["dropped"] == {"DontCare": 4}
    # Cars sit on the road: box bottoms within 0.5 m of the ego ground plane; all ahead.
    assert (boxes[:, 2] - boxes[:, 5] / 2).abs().max() < 0.5 and (boxes[:, 0] > 0).all()
    corners = box_corners(boxes)
    cam = transform_points(invert_transform(s.T_ego_from_cam[0]), corners.reshape(-1, 3))
    uv = cam @ s.intrinsics[0].T
    uv = (uv[:, :2] / uv[:, 2:]).reshape(-1, 8, 2)
    det = s.labels["detection2d"]
    h, w = s.images.shape[-2:]
    for k in range(len(boxes)):
        proj = torch.cat([uv[k].min(0).values, uv[k].max(0).values])
        proj = torch.stack([proj[0].clamp(0, w - 1), proj[1].clamp(0, h - 1), proj[2].clamp(0, w - 1),
                            proj[3].clamp(0, h - 1)])
        if det["truncated"][k] == 0:  # boxes cut at the border differ by construction
            assert (proj - det["boxes"][k]).abs().max() < 4, (k, proj, det["boxes"][k])
    depth = s.labels["depth"][0]
    assert 10_000 < int((depth > 0).sum()) and float(depth.max()) < 90


def test_convert_cli_writes_shards_that_read_back(tmp_path):
    from typer.testing import CliRunner

    from hydranet.cli import app
    from hydranet.data.shards import ShardDataset

    root = write_kitti(tmp_path / "kitti", [CAR], velodyne=np.array([[8.0, 2.0, -1.0, 0.5]]))
    out = tmp_path / "shards"
    result = CliRunner().invoke(app, ["convert", "kitti", "--root", str(root), "--image-size", "128x416",
                                      "--min-lidar-points", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    shard = ShardDataset(out)[0]
    direct = KittiObject(root, image_size=[128, 416])[0]
    assert shard.camera_names == ("CAM2",) and shard.images.shape == (1, 3, 128, 416)
    torch.testing.assert_close(shard.intrinsics, direct.intrinsics)
    torch.testing.assert_close(shard.labels["objects3d"]["boxes"], direct.labels["objects3d"]["boxes"])
    torch.testing.assert_close(shard.labels["depth"], direct.labels["depth"])
    bad = CliRunner().invoke(app, ["convert", "kitti", "--root", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 2 and "image_2/ folder" in " ".join(bad.output.split())
