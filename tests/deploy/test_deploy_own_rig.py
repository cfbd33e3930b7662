"""Any model exports with its own rig: a fleet's 9 cameras of mixed native resolutions, real-looking intrinsics
(fx != fy, off-centre principal points) and rolled mounts go convert (frames) -> train -> export --verify ->
quantize -> infer, and the exported graph matches PyTorch on frames of that rig (parity <= 1e-4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from hydranet.checkpoint import load_model
from hydranet.cli import app
from hydranet.deploy.runtime import DeployedModel
from hydranet.deploy.verify import parity
from hydranet.geometry import camera_angles, camera_extrinsics

# name: (native H, W), yaw, pitch, roll (deg): three resolutions, forward / side / rear, mounts rolled up to 2 deg
CAMERAS = {
    "front_wide": ((90, 160), 0, 3, 0.0), "front_narrow": ((60, 200), 0, 1, 0.5),
    "front_left": ((96, 128), 45, 4, -1), "front_right": ((96, 128), -45, 4, 1.0),
    "side_left": ((90, 160), 95, 6, 2.0), "side_right": ((90, 160), -95, 6, -2),
    "rear_left": ((96, 128), 150, 8, 0.0), "rear_right": ((96, 128), -150, 8, 0.0), "rear": ((60, 200), 180, 10, 1.5),
}
SIZE = (64, 128)  # the network input: every camera is resized to it, its K rescaled


def write_fleet(root, frames: int = 3):
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(frames):
        cams = {}
        for k, (name, ((h, w), yaw, pitch, roll)) in enumerate(CAMERAS.items()):
            path = root / "img" / f"{name}_{i}.png"
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
            K = [[0.9 * w + k, 0, 0.47 * w], [0, 0.8 * w, 0.55 * h], [0, 0, 1]]  # fx != fy, off-centre
            T = camera_extrinsics((1.0, 0.2 * math.sin(math.radians(yaw)), 1.5), yaw, pitch, roll)
            cams[name] = {"image": f"img/{name}_{i}.png", "K": K, "T_ego_from_cam": T.tolist()}
        lines.append({"scene_id": "drive-1", "frame_index": i, "timestamp": 0.1 * i,
                      "T_world_from_ego": np.eye(4).tolist(), "cameras": cams,
                      "labels": {"objects3d": {"boxes": [[8.0 + i, -2.0, 0.8, 4.5, 1.9, 1.6, 0.1]], "classes": ["car"]},
                                 "detection2d": {"boxes": [[10, 12, 40, 30]], "classes": ["car"],
                                                 "camera": ["front_wide"]}}})
    (root / "frames.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root / "frames.jsonl"


@pytest.mark.slow
def test_a_nine_camera_mixed_resolution_rig_converts_trains_exports_and_infers(tmp_path):
    runner = CliRunner()
    index = write_fleet(tmp_path / "fleet")
    shards = tmp_path / "shards"
    r = runner.invoke(app, ["convert", "frames", "--index", str(index), "--image-size", "64x128", "--out", str(shards)])
    assert r.exit_code == 0, r.output
    config = {"data": {"datasets": {"fleet": {"kind": "shards", "path": str(shards)}}},
              "model": {"preset": "tiny", "trunk": {"name": "regnet_tiny"}, "neck": {"channels": 16},
                        "fusion": {"channels": 16, "encoder_blocks": 1}, "bev_channels": 16,
                        "setup": {"image_size": list(SIZE), "grid": {"cell": 2.0}},
                        "tasks": {"objects3d": {}, "detection2d": {}}},
              "train": {"steps": 2, "batch_size": 1, "warmup_steps": 0, "threads": 1, "log_every": 1}}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(config))
    r = runner.invoke(app, ["train", "-c", str(tmp_path / "fleet.yaml"), "-o", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 0, r.output
    graph = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(tmp_path / "run"), "-o", str(graph), "--verify", "--verify-frames", "2"])
    assert r.exit_code == 0 and "parity ok" in r.output, r.output  # before: "model has 9 cameras but the rig has 8"
    # The manifest carries the fleet's rig as it is: native sizes, K with fx != fy, the rolled mounts.
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    (rig,) = manifest["setup"]["rigs"]
    assert rig["name"] == "frames" and [c["name"] for c in rig["cameras"]] == list(CAMERAS)
    assert {tuple(c["image_size"]) for c in rig["cameras"]} == {(90, 160), (60, 200), (96, 128)}
    side_left = rig["cameras"][4]
    assert side_left["fx"] != side_left["fy"] and side_left["cx"] == pytest.approx(0.47 * 160)
    assert camera_angles(torch.tensor(side_left["T_ego_from_cam"]))[2] == pytest.approx(2.0, abs=1e-4)  # roll
    # Parity on frames rendered for that rig (the world renders the manifest's setup), ORT vs eager.
    model, _ = load_model(tmp_path / "run")
    worst = parity(model, DeployedModel(graph, threads=1), frames=2)
    assert max(worst.values()) <= 1e-4, worst
    r = runner.invoke(app, ["quantize", str(graph), "--calib-frames", "2", "--eval-frames", "0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["infer", str(tmp_path / "m.int8.onnx"), "--data", str(shards), "-o", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    predictions = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(predictions["frames"]) == 3 and set(predictions["frames"][0]["tasks"]) == {"objects3d", "detection2d"}


@pytest.mark.slow
def test_the_shipped_world_rendered_rig_trains_exports_and_infers_with_its_nine_cameras(tmp_path):
    """configs/own_rig.yaml: a rig declared only in model.setup, rendered by the world, exported with it."""
    runner = CliRunner()
    config = Path(__file__).resolve().parents[2] / "configs" / "own_rig.yaml"
    run, graph = tmp_path / "run", tmp_path / "own_rig.onnx"
    r = runner.invoke(app, ["train", "-c", str(config), "-o", str(run), "--no-progress", "--set", "train.steps=2",
                            "--set", "data.datasets.world.frames=4", "--set", "data.eval.frames=2",
                            "--set", "eval.frames=2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(run), "-o", str(graph), "--verify", "--verify-frames", "2"])
    assert r.exit_code == 0 and "parity ok" in r.output, r.output
    (rig,) = json.loads((tmp_path / "own_rig.manifest.json").read_text())["setup"]["rigs"]
    assert rig["name"] == "fleet" and len(rig["cameras"]) == 9
    frames = tmp_path / "frames"
    r = runner.invoke(app, ["generate", "--config", str(config), "--dataset", "world", "--frames", "2",
                            "-o", str(frames)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["infer", str(graph), "--data", str(frames), "-o", str(tmp_path / "pred")])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "pred" / "predictions.json").read_text())["frames"]) == 2
