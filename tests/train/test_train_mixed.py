"""configs/mixed.yaml: one HydraNet from the world (8 cameras), nuScenes (6) and BDD100K (1) at once."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from hydranet.train.config import config_from_dict
from hydranet.train.data import build_train_data
from hydranet.train.run import run_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from nuscenes_fixture import write_nuscenes  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "mixed.yaml"


def write_bdd(root: Path) -> Path:
    """Two BDD100K val frames (det_20 JSON: a car, a green light, a rider that has no model class)."""
    d = root / "images" / "100k" / "val"
    d.mkdir(parents=True)
    yy, xx = np.mgrid[0:180, 0:320]
    for n in ("a.jpg", "b.jpg"):
        Image.fromarray(np.stack([xx % 256, yy, 255 - yy], -1).astype(np.uint8)).save(d / n)
    box = {"category": "car", "attributes": {}, "box2d": {"x1": 40, "y1": 80, "x2": 120, "y2": 140}}
    light = {"category": "traffic light", "attributes": {"trafficLightColor": "G"},
             "box2d": {"x1": 200, "y1": 10, "x2": 210, "y2": 30}}
    rider = {"category": "rider", "attributes": {}, "box2d": {"x1": 150, "y1": 80, "x2": 170, "y2": 120}}
    frames = [{"name": n, "labels": [box, light, rider]} for n in ("a.jpg", "b.jpg")]
    (root / "labels" / "det_20").mkdir(parents=True)
    (root / "labels" / "det_20" / "det_val.json").write_text(json.dumps(frames))
    return root


@pytest.fixture
def mixed_config(tmp_path):
    tree = yaml.safe_load(CONFIG.read_text())
    size = [64, 128]
    world = {"seed": 1, "num_scenes": 1, "frames_per_scene": 4}
    nusc = write_nuscenes(tmp_path / "nusc", keyframes=2)
    tree["data"]["datasets"]["world"].update(frames=4, world=world)
    # nuScenes and BDD100K take the model's image size, grid and classes (the setup flows into the sources)
    tree["data"]["datasets"]["nuscenes"] = {"kind": "nuscenes", "dataroot": str(nusc)}
    tree["data"]["datasets"]["bdd100k"].update(root=str(write_bdd(tmp_path / "bdd")))
    tree["data"]["eval"] = None
    tree["model"]["setup"].update(image_size=size, grid={"x_range": [-32, 32], "y_range": [-32, 32], "cell": 4.0})
    tree["train"].update(steps=6, batch_size=1, num_workers=0, warmup_steps=1, log_every=1, eval_every=0,
                         scheduler={"kind": "round_robin"})
    return config_from_dict(tree, str(CONFIG))


def test_streams_are_per_dataset_and_tasks_only_see_their_labels(mixed_config):
    labels = {"detection2d": "detection2d", "traffic_light": "traffic_light", "drivable": "drivable",
              "lanes": "lanes", "depth": "depth", "bev_semantic": "bev_semantic", "objects3d": "objects3d"}
    data = build_train_data(mixed_config.data, labels, setup=mixed_config.resolved_model().setup)
    assert data.sizes == {"bdd100k": 2, "nuscenes": 2, "world": 4}
    assert data.rigs == {"bdd100k": "1 cameras 64x128", "nuscenes": "6 cameras 64x128",
                         "world": "8 cameras 64x128"}
    from hydranet.train.scheduler import TaskScheduler

    sched = TaskScheduler(data.index_lists, "round_robin", num_samples=8, groups=data.groups)
    streams = set(sched.lists)
    assert {"objects3d@nuscenes", "objects3d@world", "traffic_light@bdd100k", "detection2d@bdd100k",
            "detection2d@nuscenes", "depth@nuscenes"} <= streams
    assert not {"objects3d@bdd100k", "traffic_light@nuscenes", "drivable@nuscenes", "bev_semantic@bdd100k"} & streams
    for stream, idx in sched.lists.items():  # every batch of a stream comes from one dataset
        assert set(data.groups[idx]) == {stream.split("@")[1]}


def test_mixed_config_trains_a_few_steps(mixed_config, tmp_path):
    summary = run_training(mixed_config, tmp_path / "run", progress=False)
    assert summary["steps"] == 6 and summary.get("skipped_steps", 0) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [frozenset(row["task_loss"]) for row in log]
    # Each step trained the tasks of exactly one dataset: BDD100K (1 camera) only camera tasks, nuScenes
    # (6 cameras) its 3D/BEV/depth/2D tasks, the world (8 cameras) lanes and drivable too.
    assert frozenset({"detection2d", "traffic_light"}) in steps
    assert frozenset({"bev_semantic", "depth", "detection2d", "objects3d"}) in steps
    assert any("drivable" in s and "objects3d" in s for s in steps)
    assert all(np.isfinite(v) for row in log for v in row["task_loss"].values())
