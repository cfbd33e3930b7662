"""``frames`` (a user's own rig): the JSON-lines index, its labels, and errors that name line and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hydranet.data.sample import OBJECT_CLASSES
from hydranet.data.sources import SourceError, open_source
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
    assert s.images.shape == (2, 3, 90, 160) and s.timestamp == 100.0 and s.scene_id == "drive-7"
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


def _line(**override) -> dict:
    base = {"scene_id": "s", "timestamp": 0.0, "T_world_from_ego": np.eye(4).tolist(),
            "cameras": {"front": {"image": "img/front0.png", "K": K, "T_ego_from_cam": _T(0.0)},
                        "left": {"image": "img/left0.png", "K": K, "T_ego_from_cam": _T(90.0)}}}
    base.update(override)
    return base


@pytest.mark.parametrize("line, message", [
    (_line(timestamp="soon"), r"frames.jsonl:3: timestamp: Input should be a valid number"),
    (_line(speed=3), r"frames.jsonl:3: speed: unknown field"),
    (_line(T_world_from_ego=[[1, 0, 0], [0, 1, 0]]), r"frames.jsonl:3: T_world_from_ego: expected a 4x4 matrix"),
    (_line(cameras={"front": {"image": "img/front0.png", "K": [[0, 0, 1], [0, 1, 1], [0, 0, 1]],
                              "T_ego_from_cam": _T(0)}}), r"frames.jsonl:3: cameras.front.K: expected"),
    (_line(cameras={"front": {"image": "img/front0.png", "K": K, "T_ego_from_cam": (2 * np.eye(4)).tolist()}}),
     r"frames.jsonl:3: cameras.front.T_ego_from_cam: not a rigid transform"),
    (_line(cameras={"left": {"image": "img/left0.png", "K": K, "T_ego_from_cam": _T(0)}}),
     r"frames.jsonl:3: cameras: \['left'\] differ from the first line's \['front', 'left'\]"),
    (_line(labels={"boxes3d": {}}), r"frames.jsonl:3: labels.boxes3d: unknown label"),
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


def test_missing_image_and_mismatched_sizes_name_the_camera(tmp_path):
    index = write_frames(tmp_path, [_line(cameras={"front": {"image": "img/none.png", "K": K,
                                                             "T_ego_from_cam": _T(0)}})])
    with pytest.raises(SourceError, match=r"frames.jsonl:2: cameras.front.image: .*none.png: image file not found"):
        FramesIndex(index)[0]
    Image.new("RGB", (64, 32)).save(tmp_path / "img" / "small.png")
    index.write_text(json.dumps(_line(cameras={
        "front": {"image": "img/front0.png", "K": K, "T_ego_from_cam": _T(0)},
        "left": {"image": "img/small.png", "K": K, "T_ego_from_cam": _T(90)}})))
    with pytest.raises(SourceError, match=r"frames.jsonl:1: cameras.left.image: 64x32 differs"):
        FramesIndex(index)[0]
    assert FramesIndex(index, image_size=(32, 64))[0].images.shape == (2, 3, 32, 64)
