"""``frames`` (a user's own rig): the JSON-lines index, its labels, and errors that name line and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hydranet.data.sample import OBJECT_CLASSES
from hydranet.data.sources import SourceConfigError, SourceError, open_source
from hydranet.geometry import camera_extrinsics


def FramesIndex(index, **options):
    return open_source({"kind": "frames", "index": str(index), **options})


K = [[400.0, 0.0, 160.0], [0.0, 400.0, 90.0], [0.0, 0.0, 1.0]]


def _T(yaw: float) -> list:
    return camera_extrinsics((1.5, 0.0, 1.4), yaw, 0.0).tolist()


def write_frames(tmp: Path, lines: list[dict] | None = None, size=(180, 320)) -> Path:
    rng = np.random.default_rng(0)
    (tmp / "img").mkdir(exist_ok=True)
    for cam in ("front", "left"):
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp / "img" / f"{cam}{i}.png")
    mask = np.zeros(size, np.uint8)
    mask[120:] = 1
    Image.fromarray(mask).save(tmp / "img" / "drivable.png")
    Image.fromarray((np.full(size, 10.0) * 256).astype(np.uint16)).save(tmp / "img" / "depth.png")
    if lines is None:
        lines = [{
            "scene_id": "drive-7", "frame_index": i, "timestamp": 100.0 + 0.1 * i,
            "T_world_from_ego": np.eye(4).tolist(),
            "cameras": {"front": {"image": f"img/front{i}.png", "K": K, "T_ego_from_cam": _T(0.0)},
                        "left": {"image": str(tmp / "img" / f"left{i}.png"), "K": K, "T_ego_from_cam": _T(90.0)}},
            "labels": {"detection2d": {"boxes": [[10, 20, 50, 60]], "classes": ["truck"], "camera": ["left"]},
                       "objects3d": {"boxes": [[12, -1, 0.8, 4.5, 1.9, 1.6, 0.1]], "classes": [0],
                                     "velocity": [[3.0, 0.0]]},
                       "drivable": {"front": "img/drivable.png", "left": "img/drivable.png"},
                       "depth": {"front": "img/depth.png", "left": "img/depth.png"}} if i == 0 else {},
        } for i in range(2)]
    index = tmp / "frames.jsonl"
    index.write_text("# my fleet\n" + "\n".join(json.dumps(x) for x in lines) + "\n\n")
    return index


def test_frames_rig_geometry_and_labels(tmp_path):
    ds = FramesIndex(write_frames(tmp_path), image_size=(90, 160))
    assert len(ds) == 2 and ds.camera_names == ("front", "left")
    s = ds[0]
    s.validate()
    assert s.images.shape == (2, 3, 90, 160) and s.timestamp == 0.0 and s.scene_id == "drive-7"  # from its start
    assert ds[1].timestamp == pytest.approx(0.1)
    torch.testing.assert_close(s.intrinsics[0], torch.tensor([[200.0, 0, 80], [0, 200, 45], [0, 0, 1]]))
    torch.testing.assert_close(s.T_ego_from_cam[1], torch.tensor(_T(90.0), dtype=torch.float32))
    det = s.labels["detection2d"]
    assert det["classes"].tolist() == [OBJECT_CLASSES.index("truck")] and det["camera"].tolist() == [1]
    torch.testing.assert_close(det["boxes"][0], torch.tensor([5.0, 10.0, 25.0, 30.0]))
    assert det["visible"].tolist() == [1.0] and det["track_id"].tolist() == [0]
    assert s.labels["objects3d"]["velocity"].tolist() == [[3.0, 0.0]]
    assert s.labels["drivable"].shape == (2, 90, 160) and s.labels["drivable"][0, 80, 0] == 1
    assert s.labels["drivable"][0, 10, 0] == 0
    assert s.labels["depth"].dtype == torch.float32 and float(s.labels["depth"].max()) == 10.0
    assert ds[1].labels == {}


def test_epoch_times_and_utm_poses_keep_their_differences_in_float32(tmp_path):
    # A fleet logs epoch seconds and UTM poses: float32 holds neither (128 s steps at 1.7e9 s, 0.5 m at 5e6 m).
    # Each scene's time and world origin start at its first frame, computed in float64 before the cast.
    lines = []
    for scene, t0, east in (("a", 1_700_000_000.05, 500_123.25), ("b", 1_700_000_900.55, 512_000.75)):
        for i in (1, 0, 2):  # any order in the file: the origin is the scene's first frame, by frame_index
            pose = np.eye(4)
            pose[:3, 3] = [east + 1.37 * i, 5_400_000.5 + 0.02 * i, 31.0]
            lines.append({"scene_id": scene, "frame_index": i, "timestamp": t0 + 0.1 * i,
                          "T_world_from_ego": pose.tolist(),
                          "cameras": {"front": {"image": f"img/front{i % 2}.png", "K": K, "T_ego_from_cam": _T(0)},
                                      "left": {"image": f"img/left{i % 2}.png", "K": K, "T_ego_from_cam": _T(90)}}})
    ds = FramesIndex(write_frames(tmp_path, lines))
    by_frame = {(ds[k].scene_id, ds[k].frame_index): ds[k] for k in range(len(ds))}
    for scene in ("a", "b"):
        for i in range(3):
            s = by_frame[(scene, i)]
            s.validate()
            assert s.timestamp == pytest.approx(0.1 * i, abs=1e-6)
            torch.testing.assert_close(s.T_world_from_ego[:3, 3], torch.tensor([1.37 * i, 0.02 * i, 0.0]))
    # The origins travel into a converted dataset's manifest (before: kept nowhere, so converted times and poses
    # could not be put back on the map).
    origins = ds.describe()["scene_origins"]
    assert origins["a"] == {"timestamp": 1_700_000_000.05, "position": [500_123.25, 5_400_000.5, 31.0]}
    assert origins["b"]["timestamp"] == 1_700_000_900.55


def _line(**override) -> dict:
    base = {"scene_id": "s", "timestamp": 0.0, "T_world_from_ego": np.eye(4).tolist(),
            "cameras": {"front": {"image": "img/front0.png", "K": K, "T_ego_from_cam": _T(0.0)},
                        "left": {"image": "img/left0.png", "K": K, "T_ego_from_cam": _T(90.0)}}}
    base.update(override)
    return base


@pytest.mark.parametrize("line, message", [
    (_line(timestamp="soon"), r"frames.jsonl:3: timestamp: Input should be a valid number"),
    (_line(timestamp="1700000000.2"), r"frames.jsonl:3: timestamp: Input should be a valid number, not str"),
    ([1, 2], r"frames.jsonl:3: expected a JSON object \(one frame\), got a list"),
    (_line(speed=3), r"frames.jsonl:3: speed: unknown field"),
    (_line(T_world_from_ego=[[1, 0, 0], [0, 1, 0]]), r"frames.jsonl:3: T_world_from_ego: expected a 4x4 matrix"),
    (_line(cameras={"front": {"image": "img/front0.png", "K": [[0, 0, 1], [0, 1, 1], [0, 0, 1]],
                              "T_ego_from_cam": _T(0)}}), r"frames.jsonl:3: cameras.front.K: not a pinhole K"),
    (_line(cameras={"front": {"image": "img/front0.png", "K": K, "T_ego_from_cam": (2 * np.eye(4)).tolist()}}),
     r"frames.jsonl:3: cameras.front.T_ego_from_cam: not a rigid transform"),
    (_line(cameras={"left": {"image": "img/left0.png", "K": K, "T_ego_from_cam": _T(0)}}),
     r"frames.jsonl:3: cameras: \['left'\] differ from the first line's \['front', 'left'\]"),
    (_line(labels={"radar": {}}), r"frames.jsonl:3: labels.radar: unknown label \(typo\?\); frames supports"),
    (_line(labels={"object3d": {}}), r"frames.jsonl:3: labels.object3d: unknown label \(typo of 'objects3d'\?\)"),
    # a key that differs in case only is named too (difflib finds nothing close to a one-letter key)
    (_line(cameras={"front": {"image": "img/front0.png", "k": K, "T_ego_from_cam": _T(0)}}),
     r"frames.jsonl:3: cameras.front.k: unknown field \(typo of 'K'\?\)$"),
    # A misspelt key is the unknown key, with the name it is close to (before: "cameras.front.image: Field required",
    # the field it left missing).
    (_line(cameras={"front": {"imgae": "img/front0.png", "K": K, "T_ego_from_cam": _T(0)}}),
     r"frames.jsonl:3: cameras.front.imgae: unknown field \(typo of 'image'\?\)$"),
    ({**{k: v for k, v in _line().items() if k != "timestamp"}, "timestmp": 0.0},
     r"frames.jsonl:3: timestmp: unknown field \(typo of 'timestamp'\?\)$"),
])
def test_bad_lines_name_line_and_field(tmp_path, line, message):
    index = write_frames(tmp_path, [_line(), line])
    with pytest.raises(SourceError, match=message):
        FramesIndex(index)


@pytest.mark.parametrize("labels, message", [
    ({"detection2d": {"boxes": [[1, 2, 3, 4]], "classes": [7], "camera": [0]}},
     r"labels.detection2d.classes\[0\]: 7 is neither a name in"),
    ({"traffic_light": {"boxes": [[1, 2, 3, 4]], "state": ["blue"], "camera": [0]}},
     r"labels.traffic_light.state\[0\]: 'blue' is not one of \['red', 'yellow', 'green'\]"),
    ({"detection2d": {"boxes": [[1, 2, 3, 4]], "classes": [0]}}, r"labels.detection2d.camera: missing"),
    ({"detection2d": {"boxes": [[1, 2, 3, 4]], "classes": [0], "camras": [0]}},
     r"labels.detection2d.camras: unknown field \(typo of 'camera'\?\); known: \['boxes', 'classes', 'camera', "),
    ({"objects3d": {"boxes": [[1, 2, 3]], "classes": [0]}}, r"labels.objects3d.boxes: expected shape \[M, 7\]"),
    ({"objects3d": {"boxes": [[1, 2, 3, 4, 5, 6, float("nan")]], "classes": [0]}},
     r"labels.objects3d.boxes: non-finite value"),
    ({"objects3d": {"boxes": [[1, 2, 3, 4, 5, 6, 7]], "classes": [0, 1]}},
     r"labels.objects3d.classes: 2 entries, boxes has 1"),
    ({"drivable": {"front": "img/nothere.png", "left": "img/drivable.png"}},
     r"labels.drivable.front: .*nothere.png not found"),
    ({"lanes": {"front": "img/depth.png", "left": "img/depth.png"}}, r"labels.lanes.front: lanes must be uint8"),
])
def test_bad_labels_name_line_and_field(tmp_path, labels, message):
    index = write_frames(tmp_path, [_line(labels=labels)])
    with pytest.raises(SourceError, match=r"frames.jsonl:2: " + message):
        FramesIndex(index)[0]


def test_class_names_go_through_the_class_map(tmp_path):
    labels = {"detection2d": {"boxes": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 10, 10]], "classes": ["bus", "car", "van"],
                              "camera": [0, 1, 0]}}
    index = write_frames(tmp_path, [_line(labels=labels)])
    ds = FramesIndex(index, class_map={"van": "car"})
    det = ds[0].labels["detection2d"]
    assert det["classes"].tolist() == [0, 0] and det["camera"].tolist() == [1, 0]
    assert det["boxes"][:, 0].tolist() == [5.0, 9.0]
    assert ds.class_map.report() == {"kept": {"car": 1, "van": 1}, "dropped": {"bus": 1},
                                     "model_class": {"car": "car", "van": "car"}}
    # A key no line uses and hydranet does not know (a typo) would map nothing: refused, naming the index's names.
    with pytest.raises(SourceConfigError, match=r"frames\.class_map: \['vna'\] are not classes of this dataset "
                       r"\(its classes: \['bus', 'car', 'cone', 'pedestrian', 'traffic_light', 'truck', 'van'\]\)"):
        FramesIndex(index, class_map={"vna": "car"})
    assert len(FramesIndex(index, class_map={"truck": "car"})) == 1  # a hydranet class no line uses: fine


def test_missing_image_and_mismatched_sizes_name_the_camera(tmp_path):
    index = write_frames(tmp_path, [_line(cameras={"front": {"image": "img/none.png", "K": K,
                                                             "T_ego_from_cam": _T(0)}})])
    with pytest.raises(SourceError, match=r"frames.jsonl:2: cameras.front.image: .*none.png: image file not found"):
        FramesIndex(index)[0]
    Image.new("RGB", (64, 32)).save(tmp_path / "img" / "small.png")
    index.write_text(json.dumps(_line(cameras={
        "front": {"image": "img/front0.png", "K": K, "T_ego_from_cam": _T(0)},
        "left": {"image": "img/small.png", "K": K_SMALL, "T_ego_from_cam": _T(90)}})))
    # the first line declares the rig: neither camera is the odd one, both are named with their sizes
    with pytest.raises(SourceError, match=r"frames.jsonl:1: cameras: image sizes \(WxH\) front 320x180, left 64x32: "
                                          r"without image_size every camera .* pass image_size"):
        FramesIndex(index)[0]
    assert FramesIndex(index, image_size=(32, 64))[0].images.shape == (2, 3, 32, 64)


K_SMALL = [[80.0, 0.0, 32.0], [0.0, 80.0, 16.0], [0.0, 0.0, 1.0]]  # K of the 64x32 image


def _small(*cams: str) -> dict:
    """Line 3 (the second frame) with ``cams`` at 64x32 (their K in those pixels), the others at 320x180."""
    cameras = {}
    for cam, yaw in (("front", 0.0), ("left", 90.0)):
        image, k = ("img/small.png", K_SMALL) if cam in cams else (f"img/{cam}1.png", K)
        cameras[cam] = {"image": image, "K": k, "T_ego_from_cam": _T(yaw)}
    return _line(frame_index=1, cameras=cameras)


@pytest.mark.parametrize("cams, message", [
    # before: "cameras.left.image: 320x180 differs from the other cameras' 64x32", blaming the camera read second
    (("front",), r"frames.jsonl:3: cameras.front.image: image sizes \(WxH\) front 64x32, left 320x180; "
                 r"the rig \(line 2\) is 320x180: "),
    # before: "sample 000000001: rig differs from the first sample", from the shard writer, no file or line
    (("front", "left"), r"frames.jsonl:3: cameras: image sizes \(WxH\) front 64x32, left 64x32; the rig \(line 2\) "
                        r"is 320x180: "),
])
def test_a_line_of_other_image_sizes_names_every_camera_and_the_rig(tmp_path, cams, message):
    index = write_frames(tmp_path, [_line(), _small(*cams)])
    Image.new("RGB", (64, 32)).save(tmp_path / "img" / "small.png")
    ds = FramesIndex(index)
    assert ds[0].images.shape == (2, 3, 180, 320)
    with pytest.raises(SourceError, match=message + r"without image_size every camera of every line must have one "
                                                    r"size; pass image_size \(--image-size HxW"):
        ds[1]
    resized = FramesIndex(index, image_size=(90, 160))[1]  # the rig's cameras resized: K follows each one's size
    assert resized.images.shape == (2, 3, 90, 160) and resized.intrinsics[0, 0, 2] == pytest.approx(80.0)


@pytest.mark.parametrize("line, cx, cy", [(0, 500.0, 90.0), (1, 160.0, -4.0), (1, 320.5, 90.0),
                                          (1, 320.0, 180.0)])  # the centred K of an image twice as large
def test_a_principal_point_outside_the_image_is_refused(tmp_path, line, cx, cy):
    """A K for another resolution (cx = 500 on a 320-wide image) was accepted and projected everything off by
    the scale. The first line is refused when the rig is read, any other when its frame is."""
    lines = [_line(), _line(frame_index=1)]
    lines[line]["cameras"]["left"]["K"] = [[400.0, 0.0, cx], [0.0, 400.0, cy], [0.0, 0.0, 1.0]]
    ds = FramesIndex(write_frames(tmp_path, lines))
    message = (rf"frames.jsonl:{line + 2}: cameras.left.K: principal point \(cx, cy\) = \({cx:g}, {cy:g}\) does "
               r"not lie in the 320x180 \(WxH\) image with cx in its middle half: a K for another resolution\?")
    with pytest.raises(SourceError, match=message):
        ds.setup if line == 0 else ds[1]
    with pytest.raises(SourceError, match=message):  # resizing does not hide it: K is in the stored image's pixels
        FramesIndex(write_frames(tmp_path, lines), image_size=(90, 160))[line]


def test_a_principal_point_of_a_cropped_image_is_kept(tmp_path):
    # The sky cut off: cy at the top edge. A crop moves cy, so only cx is held to the middle half.
    lines = [_line()]
    lines[0]["cameras"]["left"]["K"] = [[400.0, 0.0, 170.0], [0.0, 400.0, 0.0], [0.0, 0.0, 1.0]]
    assert FramesIndex(write_frames(tmp_path, lines))[0].intrinsics[1, 1, 2] == 0.0


def test_a_box_of_another_length_names_its_row(tmp_path):
    # Before: numpy's "setting an array element with a sequence ... inhomogeneous shape" for a short box.
    labels = {"detection2d": {"boxes": [[1, 2, 3, 4], [5, 6, 7]], "classes": ["car", "car"], "camera": [0, 1]}}
    index = write_frames(tmp_path, [_line(labels=labels)])
    with pytest.raises(SourceError, match=r"labels.detection2d.boxes: expected shape \[M, 4\], row 1 has 3 values"):
        FramesIndex(index)[0]


def test_skew_time_going_back_and_missing_files_are_refused_when_the_index_is_read(tmp_path):
    """Before: skew was refused on the first line only (with no file or line), a frame 5 s before its predecessor
    was stored with a negative time step, and a missing image stopped a training run when its frame was drawn."""
    skewed = [[400.0, 5.0, 160.0], [0.0, 400.0, 90.0], [0.0, 0.0, 1.0]]
    lines = [_line(), _line(frame_index=1, timestamp=0.1)]
    lines[1]["cameras"]["left"]["K"] = skewed
    with pytest.raises(SourceError, match=r"frames.jsonl:3: cameras.left.K: not a pinhole K \(need \[\[fx, 0, cx\]"):
        FramesIndex(write_frames(tmp_path, lines))
    back = [_line(timestamp=10.0), _line(frame_index=1, timestamp=5.0)]
    with pytest.raises(SourceError, match=r"frames.jsonl:3: timestamp: 5.0 is before frame 0's 10.0 \(line 2\)"):
        FramesIndex(write_frames(tmp_path, back))
    missing = [_line(), _line(frame_index=1, timestamp=0.1)]
    missing[1]["cameras"]["left"]["image"] = "img/nope.png"
    with pytest.raises(SourceError, match=r"frames.jsonl:3: cameras.left.image: .*nope.png: image file not found"):
        FramesIndex(write_frames(tmp_path, missing))


def test_a_dense_label_names_the_camera_the_rig_lacks(tmp_path):
    lines = [_line(labels={"drivable": {"front": "img/drivable.png", "left": "img/drivable.png",
                                        "roof": "img/drivable.png"}})]
    with pytest.raises(SourceError, match=r"labels.drivable: expected \{camera: file\} for every camera \['front', "
                                          r"'left'\] \(\['roof'\] are not cameras of the rig\)"):
        FramesIndex(write_frames(tmp_path, lines))[0]


def test_a_pose_far_from_its_scene_names_the_line(tmp_path):
    # Before: "sample 000000001: ..." from Sample.validate, and advice to do what the source already does.
    far = np.eye(4)
    far[0, 3] = 1e30
    lines = [_line(), _line(frame_index=1, timestamp=0.1, T_world_from_ego=far.tolist())]
    with pytest.raises(SourceError, match=r"frames.jsonl:3: T_world_from_ego: the ego is 1e\+30 m from its scene's "
                                          r"first frame"):
        FramesIndex(write_frames(tmp_path, lines))[1]


def test_an_unknown_box_velocity_is_null(tmp_path):
    # As nuScenes marks a lone keyframe's velocity: NaN, not regressed and not scored (before: no way to write it).
    boxes = [[10.0, 0.0, 0.8, 4.0, 1.8, 1.6, 0.0], [20.0, 3.0, 0.8, 4.0, 1.8, 1.6, 0.0]]
    labels = {"objects3d": {"boxes": boxes, "classes": ["car", "car"], "velocity": [[1.0, 0.0], None]}}
    o = FramesIndex(write_frames(tmp_path, [_line(labels=labels)]))[0].labels["objects3d"]
    assert o["velocity"][0].tolist() == [1.0, 0.0] and bool(o["velocity"][1].isnan().all())
    labels["objects3d"]["velocity"] = [[1.0, 0.0], [float("inf"), 0.0]]
    with pytest.raises(SourceError, match=r"labels.objects3d.velocity: non-finite value \(write null"):
        FramesIndex(write_frames(tmp_path, [_line(labels=labels)]))[0]


def test_a_misspelt_key_is_one_line_exit_2_naming_it(tmp_path):
    """Through the CLI: the unknown key and its close name, exit 2 (bad input)."""
    from typer.testing import CliRunner

    from hydranet.cli import app

    line = _line(cameras={"front": {"imgae": "img/front0.png", "K": K, "T_ego_from_cam": _T(0)}})
    index = write_frames(tmp_path, [line])
    res = CliRunner().invoke(app, ["convert", "frames", "--index", str(index), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert " ".join(res.output.split()).endswith(
        f"{index}:2: cameras.front.imgae: unknown field (typo of 'image'?)"), res.output
