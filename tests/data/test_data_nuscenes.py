"""The nuScenes source on a fixture written in the official format, and on the real v1.0-mini keyframe."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes_fixture import CAM_DT, CAMERAS, EGO_YAW, car_position, lidar_points, lidar_to_world, write_nuscenes
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.data.labels import BEV_CLASSES, OBJECT_CLASSES
from hydranet.data.sources import SourceConfigError, SourceError, open_source
from hydranet.data.sources.nuscenes_labels import level, pose_matrix
from hydranet.datasets import open_dataset
from hydranet.geometry import BevGrid
from hydranet.setup import NUSCENES_CLASSES, Setup

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
REAL_ROOT = REAL / "derived" / "nuscenes_v1.0-mini_scene-0061_sample0"
MMDET_INFO = REAL / "derived" / "mmdet3d_info_json" / "nuscenes_n015-2018-07-24-11-22-45+0800_info.json"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_nuscenes(tmp_path_factory.mktemp("nusc"), keyframes=3)


@pytest.fixture(scope="module")
def source(root):
    return open_source({"kind": "nuscenes", "dataroot": str(root), "ego_path_seconds": 0.5})


def to_cam(sample, n, p_ego):
    T = torch.linalg.inv(sample.T_ego_from_cam[n].double())
    return T[:3, :3] @ torch.as_tensor(p_ego, dtype=torch.float64) + T[:3, 3]


def test_rig_geometry_and_timestamps(source):
    assert len(source) == 3 and source.camera_names == tuple(CAMERAS)
    s = source[1]
    s.validate()
    assert s.images.shape == (6, 3, 48, 80) and s.scene_id == "scene-0061" and s.frame_index == 1
    assert s.timestamp == pytest.approx(0.5)
    # Ego frame = ego pose at the LIDAR_TOP keyframe instant.
    T = s.T_world_from_ego.double()
    assert T[0, 3] == pytest.approx(100 + 5 * np.cos(EGO_YAW), abs=1e-3)
    assert float(torch.atan2(T[1, 0], T[0, 0])) == pytest.approx(EGO_YAW, abs=1e-6)


def test_projection_is_exact_on_a_moving_car(source):
    """A world point seen by a camera at its own exposure projects to the same pixel through the sample's
    ego frame (lidar instant): T_ego_from_cam carries the ego motion between the two instants."""
    from nuscenes_fixture import cam_rotation, pose_matrix, world_from_ego_at

    s = source[1]
    p_world = np.array([100 + 20 * np.cos(EGO_YAW), 200 + 20 * np.sin(EGO_YAW), 1.0, 1.0])
    # Ground truth: the camera's own exposure pose (0.5 - CAM_DT s).
    T_cam = world_from_ego_at(0.5 - CAM_DT) @ pose_matrix([1.5, 0.0, 1.5], cam_rotation(0))
    expected = (np.linalg.inv(T_cam) @ p_world)[:3]
    p_ego = (np.linalg.inv(s.T_world_from_ego.double().numpy()) @ p_world)[:3]
    got = to_cam(s, 0, p_ego).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)
    # Without the motion term the point would be off by the ego's 0.2 m travel.
    assert np.linalg.norm(expected - (np.linalg.inv(world_from_ego_at(0.5) @ pose_matrix(
        [1.5, 0.0, 1.5], cam_rotation(0))) @ p_world)[:3]) > 0.15


def test_objects3d_classes_velocity_and_filters(source, root):
    s = source[1]
    o = s.labels["objects3d"]
    names = [NUSCENES_CLASSES[c] for c in o["classes"].tolist()]
    assert sorted(names) == ["barrier", "car", "pedestrian"]  # nuScenes' own ten: animal dropped, empty car filtered
    world = open_source({"kind": "nuscenes", "dataroot": str(root), "model_classes": "world"})
    assert sorted(OBJECT_CLASSES[c] for c in world[1].labels["objects3d"]["classes"].tolist()) == ["car", "pedestrian"]
    assert world.class_map.report()["dropped"]["barrier"] == 1  # no world class: dropped and counted
    assert world.setup.classes == {"detection2d": OBJECT_CLASSES, "objects3d": OBJECT_CLASSES}
    car = names.index("car")
    p_ego = np.linalg.inv(s.T_world_from_ego.double().numpy()) @ np.append(car_position(0.5), 1.0)
    np.testing.assert_allclose(o["boxes"][car, :3].numpy(), p_ego[:3], atol=1e-3)
    np.testing.assert_allclose(o["boxes"][car, 3:6].numpy(), [4.5, 1.9, 1.6], atol=1e-6)  # l, w, h from w, l, h
    assert float(o["boxes"][car, 6]) == pytest.approx(0.0, abs=1e-5)  # heading along the ego's
    np.testing.assert_allclose(o["velocity"][car].numpy(), [4.0, 0.0], atol=1e-3)  # box_velocity, ego frame
    report = source.class_map.report()
    assert report["kept"]["barrier"] >= 1 and report["dropped"]["animal"] >= 1
    assert source.skipped["boxes without a lidar or radar point (filter_empty)"] >= 1


def test_detection2d_depth_bev_and_ego_path(source):
    s = source[0]
    d = s.labels["detection2d"]
    car_cam = [i for i in range(len(d["boxes"])) if NUSCENES_CLASSES[int(d["classes"][i])] == "car"]
    assert [int(d["camera"][i]) for i in car_cam] == [0]  # only CAM_FRONT sees the car ahead
    x1, y1, x2, y2 = d["boxes"][car_cam[0]].tolist()
    assert x1 < 40 < x2 and y1 < y2 and 0 <= x1 and x2 <= 80 and float(d["visible"][car_cam[0]]) == pytest.approx(0.9)
    # Sparse depth: the lidar point on the car's rear face lands in CAM_FRONT at its z-depth, nowhere else near.
    depth = s.labels["depth"]
    assert depth.shape == (6, 48, 80)
    pts = lidar_points(0.0)[0]
    p_world = lidar_to_world(0.0) @ np.append(pts[:3], 1.0)
    p_ego = np.linalg.inv(s.T_world_from_ego.double().numpy()) @ p_world
    z = float(to_cam(s, 0, p_ego[:3])[2])
    nz = depth[0][depth[0] > 0]
    assert len(nz) >= 1 and float(nz.min()) == pytest.approx(z, abs=1e-3)
    # BEV occupancy from boxes: vehicle and pedestrian known, drivable/lanes not (no map).
    bev, known = s.labels["bev_semantic"], s.labels["bev_semantic_known"]
    assert known.tolist() == [int(c in ("vehicle", "pedestrian", "cone")) for c in BEV_CLASSES]
    grid = BevGrid()
    r, c, ok = grid.cell_indices(torch.tensor([12.0]), torch.tensor([0.0]))
    assert bool(ok[0]) and bev[BEV_CLASSES.index("vehicle"), int(r[0]), int(c[0])] == 1
    assert int(bev[BEV_CLASSES.index("drivable")].sum()) == 0
    # ego_path: future poses (0.5 s at 10 Hz) from the later keyframes; the last keyframe has none.
    path = s.labels["ego_path"]
    assert path.shape == (5, 3)
    np.testing.assert_allclose(path[-1].numpy(), [5.0, 0.0, 0.0], atol=1e-3)
    assert "ego_path" not in source[2].labels and not source.label_present(2, "ego_path")


def test_split_and_options(root):
    assert len(open_source({"kind": "nuscenes", "dataroot": str(root), "split": "mini_train"})) == 3
    with pytest.raises(SourceError, match="none of its scenes"):
        open_source({"kind": "nuscenes", "dataroot": str(root), "split": "mini_val"})
    with pytest.raises(SourceError, match="unknown split 'nope'"):
        open_source({"kind": "nuscenes", "dataroot": str(root), "split": "nope"})
    with pytest.raises(SourceConfigError, match=r"nuscenes\.imagesize: unknown field"):
        open_source({"kind": "nuscenes", "dataroot": str(root), "imagesize": 3}, "nuscenes")
    with pytest.raises(SourceConfigError, match=r"nuscenes\.class_map\.car: 'auto' is not a model class"):
        open_source({"kind": "nuscenes", "dataroot": str(root), "class_map": {"car": "auto"}}, "nuscenes")
    with pytest.raises(SourceConfigError, match="unknown source 'nuscene'"):
        open_source({"kind": "nuscene"})
    small = open_source({"kind": "nuscenes", "dataroot": str(root), "image_size": [24, 40]})[0]
    assert small.images.shape[-2:] == (24, 40) and small.intrinsics[0, 0, 0] == pytest.approx(20.0)
    # A class_map entry brings a dropped class back; frames limits open_dataset.
    s = open_source({"kind": "nuscenes", "dataroot": str(root), "class_map": {"barrier": "cone"},
                     "model_classes": "world"})[0]
    assert OBJECT_CLASSES.index("cone") in s.labels["objects3d"]["classes"].tolist()
    assert len(open_dataset({"kind": "nuscenes", "dataroot": str(root), "frames": 2})) == 2
    assert len(open_dataset(f"nuscenes:{root}")) == 3


@pytest.mark.parametrize("drop,match", [
    ("samples/CAM_BACK/fixture__CAM_BACK__{ts}.jpg", "camera image missing: .*CAM_BACK"),
    ("samples/LIDAR_TOP/fixture__LIDAR_TOP__{ts}.pcd.bin", "lidar file missing"),
])
def test_missing_files_are_named(tmp_path, drop, match):
    from nuscenes_fixture import T0

    ts = T0 - round(CAM_DT * 1e6) if "CAM" in drop else T0
    root = write_nuscenes(tmp_path, keyframes=1, drop=drop.format(ts=ts))
    with pytest.raises(SourceError, match=match):
        open_source({"kind": "nuscenes", "dataroot": str(root)})[0]


def test_missing_table_and_token_are_named(tmp_path):
    root = write_nuscenes(tmp_path / "a", keyframes=1, drop="v1.0-mini/ego_pose.json")
    with pytest.raises(SourceError, match="table missing: .*ego_pose.json"):
        open_source({"kind": "nuscenes", "dataroot": str(root)})
    root = write_nuscenes(tmp_path / "b", keyframes=1)
    scene = json.loads((root / "v1.0-mini" / "scene.json").read_text())
    scene[0]["first_sample_token"] = "no_such_sample"
    (root / "v1.0-mini" / "scene.json").write_text(json.dumps(scene))
    with pytest.raises(SourceError, match="sample token 'no_such_sample' not found"):
        open_source({"kind": "nuscenes", "dataroot": str(root)})


@pytest.mark.parametrize("table,field,value,match", [
    ("sample_annotation", "size", [0.6, "x", 1.7], r"sample_annotation.json: token \S+: size: expected \(3,\)"),
    ("sample_annotation", "rotation", [0, 0, 0, 0], r"sample_annotation.json: token \S+: rotation .* no quaternion"),
    ("sample_annotation", "size", [-1.0, 4.0, 1.5], r"sample_annotation.json: token \S+: size .* negative"),
    ("calibrated_sensor", "camera_intrinsic", [[-500, 0, 800], [0, 500, 450], [0, 0, 1]],
     r"calibrated_sensor.json: token \S+ \(CAM_\w+\): camera_intrinsic: not a pinhole K"),
])
def test_bad_table_values_are_named(tmp_path, table, field, value, match):
    # Before: a TypeError from deep in the devkit arithmetic, or "Camera: fx: ..." with no file or token.
    root = write_nuscenes(tmp_path, keyframes=1)
    path = root / "v1.0-mini" / f"{table}.json"
    rows = json.loads(path.read_text())
    # The first camera's record (the lidar's has no camera_intrinsic), or the first annotation.
    next(r for r in rows if table != "calibrated_sensor" or r.get("camera_intrinsic"))[field] = value
    path.write_text(json.dumps(rows))
    with pytest.raises(SourceError, match=match):
        source = open_source({"kind": "nuscenes", "dataroot": str(root)})
        source[0]


def test_convert_cli_roundtrip(root, tmp_path):
    out = tmp_path / "shards"
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "nuscenes", "--dataroot", str(root), "--version", "v1.0-mini", "--out",
                              str(out), "--image-size", "24x40", "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["samples"] == 3 and report["class_map"]["kept"]["barrier"] == 3
    ds = open_dataset(out)
    s = ds[0]
    direct = open_source({"kind": "nuscenes", "dataroot": str(root), "image_size": [24, 40]})[0]
    assert s.images.shape == (6, 3, 24, 40)
    torch.testing.assert_close(s.intrinsics, direct.intrinsics)
    torch.testing.assert_close(s.labels["depth"], direct.labels["depth"])  # lossless labels
    assert (s.images.float() - direct.images.float()).abs().mean() < 3  # JPEG camera images
    assert ds.manifest.source["kind"] == "nuscenes"
    assert ds.manifest.source["classes"]["objects3d"] == list(NUSCENES_CLASSES)
    assert ds.setup.classes["objects3d"] == NUSCENES_CLASSES and ds.setup.grid == BevGrid()
    assert ds.setup.image_size == (24, 40) and ds.setup.rig().names == tuple(CAMERAS)
    # Unknown option and missing dataroot: exit 2 naming them.
    res = runner.invoke(app, ["convert", "nuscenes", "--dataroot", str(root), "--verison", "x", "--out", str(out)])
    assert res.exit_code == 2 and "verison" in res.output
    res = runner.invoke(app, ["convert", "nuscenes", "--dataroot", str(tmp_path / "none"), "--out", str(out)])
    assert res.exit_code == 2 and "tables not found" in res.output


def test_bev_labels_are_made_on_the_grid_of_the_setup_the_source_is_opened_for(root):
    coarse = BevGrid(cell=2.0)
    s = open_source({"kind": "nuscenes", "dataroot": str(root)}, setup=Setup(grid=coarse))
    bev = s[0].labels["bev_semantic"]
    assert tuple(bev.shape[-2:]) == coarse.shape and s.setup.grid == coarse  # made there, reported there
    r, c, ok = coarse.cell_indices(torch.tensor([12.0]), torch.tensor([0.0]))
    assert bool(ok[0]) and bev[BEV_CLASSES.index("vehicle"), int(r[0]), int(c[0])] == 1
    assert open_source({"kind": "nuscenes", "dataroot": str(root)}).setup.grid == Setup().grid  # the defaults
    with pytest.raises(SourceConfigError, match=r"nuscenes\.grid: unknown field"):  # not an option: one declaration
        open_source({"kind": "nuscenes", "dataroot": str(root), "grid": {"cell": 2.0}}, "nuscenes")
    with pytest.raises(SourceError, match=r"bev_semantic .* has none \(setup\.grid\)"):
        open_source({"kind": "nuscenes", "dataroot": str(root)}, setup=Setup(grid=None))
    no_bev = open_source({"kind": "nuscenes", "dataroot": str(root), "labels": ["objects3d"]}, setup=Setup(grid=None))
    assert no_bev.setup.grid is None and "bev_semantic" not in no_bev[0].labels


def test_convert_for_a_training_configs_model_setup(root, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({
        "data": {"datasets": {"nuscenes": {"kind": "shards", "path": str(tmp_path / "shards")}}},
        "model": {"preset": "tiny", "setup": {"image_size": [32, 64], "grid": {"cell": 2.0}},
                  "tasks": {"objects3d": {}, "bev_semantic": {}}}}))
    out = tmp_path / "shards"
    res = CliRunner().invoke(app, ["convert", "nuscenes", "--dataroot", str(root), "--config", str(config),
                                   "--limit", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = open_dataset(out)
    # The model's setup, declared once in the config: its grid, its input size, its (the world's) vocabulary.
    assert ds.setup.grid == BevGrid(cell=2.0) and ds.setup.image_size == (32, 64)
    assert ds.setup.classes["objects3d"] == OBJECT_CLASSES
    assert ds.manifest.source["options"]["model_classes"] == list(OBJECT_CLASSES)
    assert tuple(ds[0].labels["bev_semantic"].shape[-2:]) == BevGrid(cell=2.0).shape
    assert tuple(ds[0].images.shape[-2:]) == (32, 64)
    res = CliRunner().invoke(app, ["convert", "nuscenes", "--dataroot", str(root), "--config",
                                   str(tmp_path / "no.yaml"), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "no.yaml: no such file" in res.output


# ---------------------------------------------------------------------------------------------
# The real v1.0-mini keyframe (scene-0061, sample ca9a282c...) in ../shared/realdata
# ---------------------------------------------------------------------------------------------

real = pytest.mark.skipif(not REAL_ROOT.is_dir(), reason="../shared/realdata is absent")


@real
def test_real_keyframe_matches_mmdet3d_calibration():
    """lidar→camera through our motion-compensated T_ego_from_cam equals mmdet3d's independently computed
    lidar2cam (ego poses of lidar and camera instants) to float32 precision."""
    src = open_source({"kind": "nuscenes", "dataroot": str(REAL_ROOT)})
    s = src[0]
    assert s.images.shape == (6, 3, 900, 1600) and s.scene_id == "scene-0061"
    info = json.loads(MMDET_INFO.read_text())["data_list"][0]
    # mmdet3d's lidar2ego is the car body at the lidar instant; the sample's ego frame is that pose levelled
    sd_lidar = src.nusc.get("sample_data", src.nusc.get("sample", src.keyframes[0][2])["data"]["LIDAR_TOP"])
    ep = src.nusc.get("ego_pose", sd_lidar["ego_pose_token"])
    body = pose_matrix(ep["translation"], ep["rotation"])
    T_level_from_body = np.linalg.inv(level(body)) @ body
    T_ego_from_lidar = T_level_from_body @ np.array(info["lidar_points"]["lidar2ego"])
    for n, cam in enumerate(src.camera_names):
        ours = np.linalg.inv(s.T_ego_from_cam[n].double().numpy()) @ T_ego_from_lidar
        np.testing.assert_allclose(ours, np.array(info["images"][cam]["lidar2cam"]), atol=2e-5)
        np.testing.assert_allclose(s.intrinsics[n].numpy(), np.array(info["images"][cam]["cam2img"])[:3, :3],
                                   rtol=1e-6)
    o = s.labels["objects3d"]
    assert len(o["boxes"]) == 65  # 68 - 3 without points: barriers and the bicycle are nuScenes classes
    assert int((o["classes"] == NUSCENES_CLASSES.index("barrier")).sum()) == 22
    assert torch.isnan(o["velocity"]).all()  # a lone keyframe: the devkit cannot estimate velocity
    valid = (s.labels["depth"] > 0).sum((1, 2))
    assert (valid > 2000).all()  # sparse lidar depth in every camera


@real
def test_real_2d_boxes_follow_devkit_visibility():
    """With every class mapped and no point filter, per-camera 2D box counts are the devkit's
    BoxVisibility.ANY counts for this keyframe (47/18/2/10/2/5, README of the data)."""
    everything = {c: "car" for c in ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
                                     "motorcycle", "bicycle", "traffic_cone", "barrier")}
    src = open_source({"kind": "nuscenes", "dataroot": str(REAL_ROOT), "class_map": everything,
                       "filter_empty": False, "labels": ["detection2d"]})
    d = src[0].labels["detection2d"]
    counts = {cam: int((d["camera"] == i).sum()) for i, cam in enumerate(src.camera_names)}
    assert counts["CAM_FRONT"] == 47 and counts["CAM_FRONT_RIGHT"] == 18 and counts["CAM_BACK"] == 10


def test_show_draws_any_source(root, tmp_path):
    from PIL import Image

    runner = CliRunner()
    out = tmp_path / "show.png"
    res = runner.invoke(app, ["show", "--data", f"nuscenes:{root}", "--index", "1", "--boxes3d", "--out", str(out),
                              "--scale", "1"])
    assert res.exit_code == 0, res.output
    with Image.open(out) as im:  # 3 x 2 camera tiles of 80 x 48 beside the BEV panel
        assert im.width > 3 * 80 and im.height >= 2 * 48
    res = runner.invoke(app, ["show", "--data", f"nuscenes:{tmp_path / 'nowhere'}", "--out", str(out)])
    assert res.exit_code == 2 and "tables not found" in res.output
    res = runner.invoke(app, ["show", "--data", f"nuscenes:{root}", "--index", "9", "--out", str(out)])
    assert res.exit_code == 2 and "holds 3 samples" in res.output


def test_class_map_keys_must_be_nuscenes_classes(root):
    with pytest.raises(SourceConfigError, match=r"nuscenes\.class_map: \['bycicle'\] are not classes"):
        open_source({"kind": "nuscenes", "dataroot": str(root), "class_map": {"bycicle": "car"}})
