"""nuScenes' ten detection classes train and evaluate end to end: the model's setup names the vocabulary once,
the nuScenes source maps onto it (barriers, two-wheelers kept), the model takes the data's 6-camera rig, and
the metric scores every class with nuScenes' rules."""

import sys
from pathlib import Path

import numpy as np

from hydranet.checkpoint import load_model
from hydranet.datasets import open_dataset
from hydranet.eval.loop import dataset_batches, evaluate
from hydranet.setup import NUSCENES_CLASSES
from hydranet.train.config import config_from_dict
from hydranet.train.run import run_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from nuscenes_fixture import CAMERAS, write_nuscenes  # noqa: E402


def test_nuscenes_ten_classes_train_and_evaluate(tmp_path):
    nusc = {"kind": "nuscenes", "dataroot": str(write_nuscenes(tmp_path / "nusc", keyframes=2))}
    cfg = config_from_dict({
        "data": {"datasets": {"nuscenes": nusc}},
        "model": {"preset": "tiny", "trunk": {"name": "regnet_tiny"},
                  "setup": {"image_size": [64, 128], "grid": {"cell": 2.0},
                            "classes": {"objects3d": "nuscenes", "detection2d": "nuscenes"}},
                  "tasks": {"objects3d": {"eval_ranges": "nuscenes"}, "detection2d": {}}},
        "train": {"steps": 2, "batch_size": 1, "warmup_steps": 0, "threads": 1, "log_every": 1}})
    summary = run_training(cfg, tmp_path / "run", progress=False)
    model, _ = load_model(summary["checkpoint"])
    setup = model.setup
    assert setup.rig_names() == ["nuscenes"] and setup.rig().names == tuple(CAMERAS)  # the data's own rig
    assert setup.vocabulary("objects3d") == NUSCENES_CLASSES
    assert model.heads["objects3d"].head.branches["heatmap"][-1].out_channels == 10
    data = open_dataset({**nusc, "image_size": [64, 128]})
    tasks = model.task_objects
    result = evaluate(model, dataset_batches(data, 1), tasks)
    o = result["objects3d"]
    assert "ap/barrier" in o and "ap/bicycle" in o and np.isnan(o["ave/barrier"])  # a barrier never moves
    assert set(result["detection2d"]) >= {"map", "ap/barrier"}
