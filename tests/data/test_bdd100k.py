"""BDD100K reader: fixtures written in the official layouts (det_20 JSON, 2018 combined JSON with poly2d,
lane/drivable masks), and the real BDD100K files in ../shared/realdata when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hydranet.data.sample import LIGHT_STATES, OBJECT_CLASSES
from hydranet.data.sources import SourceError, open_source
from hydranet.data.sources.bdd100k import bezier_polyline, decode_lane_mask, read_frames

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
NAMES = ("aaaa0001-00000001.jpg", "bbbb0002-00000002.jpg")


def BDD100K(root, **options):
    return open_source({"kind": "bdd100k", "root": str(root),
                        **{k: str(v) if isinstance(v, Path) else v for k, v in options.items()}})


def _images(root: Path, split: str = "val") -> Path:
    d = root / "images" / "100k" / split
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for n in NAMES:
        Image.fromarray(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)).save(d / n, quality=90)
    return d


def _box(cat, x1, y1, x2, y2, **attrs):
    return {"id": str(x1), "category": cat, "attributes": attrs, "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}


def write_det20(root: Path) -> Path:
    _images(root)
    frames = [{"name": NAMES[0], "timestamp": 10000, "labels": [
        _box("car", 100, 300, 300, 420, occluded=True, truncated=False),
        _box("bus", 500, 250, 700, 400),
        _box("rider", 800, 300, 830, 380),
        _box("traffic light", 600, 100, 620, 140, trafficLightColor="G"),
        _box("traffic light", 650, 100, 670, 140, trafficLightColor="NA"),
        _box("traffic sign", 700, 100, 720, 140)]}]
    (root / "labels" / "det_20").mkdir(parents=True)
    (root / "labels" / "det_20" / "det_val.json").write_text(json.dumps(frames))
    return root


def test_det20_boxes_classes_lights_and_partial_labels(tmp_path):
    ds = BDD100K(write_det20(tmp_path), image_size=(180, 320))
    assert len(ds) == 2
    s = ds[0]
    s.validate()
    det = s.labels["detection2d"]
    names = [OBJECT_CLASSES[c] for c in det["classes"].tolist()]
    assert names == ["car", "truck", "traffic_light", "traffic_light"]
    torch.testing.assert_close(det["boxes"][0], torch.tensor([25.0, 75.0, 75.0, 105.0]))  # scaled by 1/4
    assert det["visible"].tolist() == [0.5, 1.0, 1.0, 1.0]
    tl = s.labels["traffic_light"]
    assert tl["state"].tolist() == [LIGHT_STATES.index("green")] and len(tl["boxes"]) == 1
    assert ds.class_map.report()["dropped"] == {"rider": 1, "traffic sign": 1}
    assert s.timestamp == 10.0 and s.camera_names == ("front",)
    # Nominal K: 65 degree horizontal FOV at 1280x720, scaled to 320x180; camera 1.35 m up, looking ahead.
    fx = 640 / np.tan(np.radians(32.5)) / 4
    torch.testing.assert_close(s.intrinsics[0], torch.tensor([[fx, 0, 160], [0, fx, 90], [0, 0, 1]],
                                                             dtype=torch.float32))
    torch.testing.assert_close(s.T_ego_from_cam[0, :3, 2], torch.tensor([1.0, 0.0, 0.0]))  # optical axis = ego x
    assert float(s.T_ego_from_cam[0, 2, 3]) == pytest.approx(1.35)
    # The second image is not in the detection file: its labels are absent, not empty.
    assert ds[1].labels == {}


def test_2018_poly2d_lanes_drivable_and_masks(tmp_path):
    _images(tmp_path)
    labels = [
        {"category": "lane", "attributes": {"laneDirection": "parallel", "laneStyle": "dashed",
                                            "laneType": "single white"},
         "poly2d": [{"vertices": [[100, 700], [400, 400]], "types": "LL", "closed": False}]},
        {"category": "lane", "attributes": {"laneDirection": "parallel", "laneStyle": "solid",
                                            "laneType": "road curb"},
         "poly2d": [{"vertices": [[1200, 700], [1000, 550], [950, 450], [900, 400]], "types": "LCCL",
                     "closed": False}]},
        {"category": "lane", "attributes": {"laneDirection": "vertical", "laneStyle": "solid",
                                            "laneType": "single white"},
         "poly2d": [{"vertices": [[300, 600], [900, 600]], "types": "LL", "closed": False}]},
        {"category": "drivable area", "attributes": {"areaType": "direct"},
         "poly2d": [{"vertices": [[400, 719], [880, 719], [700, 450], [580, 450]], "types": "LLLL", "closed": True}]},
    ]
    path = tmp_path / "labels" / "bdd100k_labels_images_val.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"name": NAMES[0], "labels": labels}]))
    # Masks for the second image: drivable ids (0 direct, 1 alternative, 2 background), lane bit codes.
    for sub in ("drivable", "lane"):
        (tmp_path / "labels" / sub / "masks" / "val").mkdir(parents=True)
    ids = np.full((720, 1280), 2, np.uint8)
    ids[600:, :640] = 0
    ids[600:, 640:] = 1
    Image.fromarray(ids).save(tmp_path / "labels" / "drivable" / "masks" / "val" / f"{Path(NAMES[1]).stem}.png")
    lane = np.full((720, 1280), 255, np.uint8)
    lane[:, 100:102] = 6 + (1 << 4)  # single white, dashed: 2 px wide, must survive a 4x shrink
    lane[:, 500:503] = 4  # road curb
    lane[:, 900:903] = 6 + (1 << 5)  # vertical marking: not a lane line
    Image.fromarray(lane).save(tmp_path / "labels" / "lane" / "masks" / "val" / f"{Path(NAMES[1]).stem}.png")

    ds = BDD100K(tmp_path, image_size=(180, 320))
    s = ds[0]
    s.validate()
    lanes = s.labels["lanes"][0]
    assert lanes[int(550 / 4), int(250 / 4)] == 1  # midpoint of the dashed line
    assert lanes[int(700 / 4) - 1, int(1195 / 4)] == 3  # start of the curb curve
    assert lanes[150, 150] == 0 and not (lanes[int(600 / 4)] == 2).any()  # the vertical marking is not drawn
    drivable = s.labels["drivable"][0]
    assert drivable[170, 160] == 1 and drivable[20, 160] == 0 and drivable[170, 20] == 0
    assert "detection2d" in s.labels and len(s.labels["detection2d"]["boxes"]) == 0  # frame listed, no boxes

    for i in range(2):  # label_present (used by training to route samples) agrees with the samples
        for label in ("detection2d", "traffic_light", "drivable", "lanes"):
            assert ds.label_present(i, label) == (label in ds[i].labels), (i, label)
    s2 = ds[1]
    assert s2.labels["drivable"][0, 170].tolist() == [1] * 320 and s2.labels["drivable"][0, 100].sum() == 0
    row = s2.labels["lanes"][0, 90]
    assert row[25] == 1 and row[125] == 3 and row[225] == 0 and set(row.unique().tolist()) == {0, 1, 3}


def test_bezier_and_errors(tmp_path):
    pts = bezier_polyline([[0, 0], [0, 10], [10, 10], [10, 0]], "LCCL", steps=5)
    assert pts[0] == (0.0, 0.0) and pts[-1] == (10.0, 0.0) and len(pts) == 5
    assert pts[2] == pytest.approx((5.0, 7.5))
    root = write_det20(tmp_path)
    bad = root / "labels" / "det_20" / "det_val.json"
    bad.write_text(json.dumps([{"name": NAMES[0], "labels": [_box("car", 10, 10, 5, 20)]}]))
    with pytest.raises(SourceError, match=r"aaaa0001-00000001.jpg: label 0 \(car\): invalid box2d"):
        BDD100K(root)[0]
    bad.write_text("{not json")
    with pytest.raises(SourceError, match="det_val.json: cannot read JSON"):
        BDD100K(root)
    with pytest.raises(SourceError, match="detection: .* does not exist"):
        BDD100K(root, detection=root / "missing.json")
    with pytest.raises(ValueError, match="bdd100k.class_map.car: 'vehicle' is not a model class"):
        BDD100K(root, class_map={"car": "vehicle"})
    with pytest.raises(SourceError, match="image folder not found"):
        BDD100K(tmp_path / "nowhere")


def test_lights_follow_the_model_vocabulary_and_unknown_colours_are_refused(tmp_path):
    root = write_det20(tmp_path)
    # A vocabulary of another order: the light is found by its class name, not by the world's index.
    s = BDD100K(root, model_classes=["traffic_light", "car", "truck", "pedestrian"])[0]
    assert s.labels["traffic_light"]["state"].tolist() == [LIGHT_STATES.index("green")]
    assert s.labels["detection2d"]["classes"].tolist() == [1, 2, 0, 0]
    det = root / "labels" / "det_20" / "det_val.json"
    det.write_text(json.dumps([{"name": NAMES[0], "labels": [
        _box("car", 10, 10, 50, 40, trafficLightColor="NA"),  # BDD's det_20 gives every box the attribute
        _box("traffic light", 600, 100, 620, 140, trafficLightColor="blue")]}]))
    with pytest.raises(SourceError, match=r"det_val.json: aaaa0001-00000001.jpg: label 1 \(traffic light\): "
                                          r"trafficLightColor 'blue'"):
        BDD100K(root)[0]
    det.write_text(json.dumps([{"name": NAMES[0], "labels": [_box("car", -100, 290, 5000, 9000)]}]))
    with pytest.raises(SourceError, match=r"label 0 \(car\): box2d .* reaches far outside the 1280x720 image"):
        BDD100K(root)[0]


def test_label_frames_without_an_image_are_counted(tmp_path):
    root = write_det20(tmp_path)
    det = root / "labels" / "det_20" / "det_val.json"
    frames = json.loads(det.read_text()) + [{"name": "cccc0003-00000003.jpg", "labels": []}]
    det.write_text(json.dumps(frames))
    ds = BDD100K(root)
    assert list(ds.skipped.values()) == [1] and "naming no image" in next(iter(ds.skipped))
    assert ds.setup.rigs  # reading sample 0 for the setup is not a conversion: the counts stay
    assert list(ds.skipped.values()) == [1]


@pytest.mark.skipif(not (REAL / "hustvl__YOLOP").is_dir(), reason="../shared/realdata is absent")
def test_real_bdd100k_images_and_label_files():
    ds = BDD100K(REAL, images=REAL / "hustvl__YOLOP" / "inference" / "images", image_size=(288, 512))
    assert len(ds) == 6
    for i in range(6):
        s = ds[i]
        s.validate()
        assert s.images.shape == (1, 3, 288, 512) and s.labels == {}  # no labels exist for these six
        assert float(s.images.float().std()) > 10  # a real picture (one of the six is at night)
    tests = REAL / "bdd100k__bdd100k" / "tests"
    for mask in sorted((tests / "eval" / "testcases" / "lane" / "gts").glob("*.png")):
        raw = np.asarray(Image.open(mask))
        kinds = decode_lane_mask(raw)
        assert ((kinds == 3) == (raw == 4)).all()  # road curb -> road edge
        assert ((kinds == 2) == np.isin(raw, (1, 2, 3, 5, 6, 7))).all()  # solid markings
        assert ((kinds == 0) == np.isin(raw, (0, 255))).all()  # crosswalk and background
    frames = read_frames(tests / "label" / "testcases" / "example_annotation.json")
    assert list(frames) == ["b1c81faa-3df17267-0000001.jpg"] and len(frames["b1c81faa-3df17267-0000001.jpg"]
                                                                     ["labels"]) == 4


def test_convert_cli_roundtrip(tmp_path):
    from typer.testing import CliRunner

    from hydranet.cli import app
    from hydranet.data.shards import ShardDataset

    root = write_det20(tmp_path / "bdd")
    out = tmp_path / "shards"
    result = CliRunner().invoke(app, ["convert", "bdd100k", "--root", str(root), "--image-size", "180x320",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    ds = ShardDataset(out)
    assert len(ds) == 2 and ds.manifest.source["class_map"]["dropped"] == {"rider": 1, "traffic sign": 1}
    s = ds[0]
    assert s.labels["traffic_light"]["state"].tolist() == [LIGHT_STATES.index("green")]
    torch.testing.assert_close(s.labels["detection2d"]["boxes"], BDD100K(root, image_size=(180, 320))[0]
                               .labels["detection2d"]["boxes"])
    assert ds[1].labels == {}  # partial labels survive conversion


def test_a_loose_folder_of_frames_is_read_as_the_image_folder(tmp_path):
    from hydranet.datasets import open_dataset

    loose = _images(tmp_path)  # ROOT/images/100k/val itself, given as the root
    ds = open_dataset(f"bdd100k:{loose}")
    assert len(ds) == len(NAMES) and ds[0].images.shape == (1, 3, 720, 1280) and ds[0].labels == {}
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="image folder not found .*--images DIR"):
        BDD100K(tmp_path / "empty")
