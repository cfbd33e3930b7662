"""``hydranet infer``: graph + manifest alone decode and draw what the PyTorch model decodes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import hydranet.checkpoint as checkpoint_module
import hydranet.model.hydranet as hydranet_module
from hydranet.cli import app
from hydranet.deploy import DeployedModel
from hydranet.deploy.heldout import heldout_batches
from hydranet.deploy.infer import run_infer
from hydranet.eval.loop import Evaluator


@pytest.fixture
def no_model(monkeypatch):
    """Make building a HydraNet or loading a checkpoint impossible: infer must not need either."""
    def forbidden(*args, **kwargs):
        raise AssertionError("inference from the graph must not build the PyTorch model or read a checkpoint")

    monkeypatch.setattr(hydranet_module.HydraNet, "__init__", forbidden)
    monkeypatch.setattr(checkpoint_module, "load_model", forbidden)
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", forbidden)


def rows(d: dict, keys: tuple[str, ...]) -> np.ndarray:
    """One row per detection: score, then every key's values (labels as floats)."""
    n = len(d["scores"])
    return np.concatenate([d["scores"][:, None].numpy()] + [d[k].reshape(n, -1).double().numpy() for k in keys], 1)


def assert_boxes_match(ort: dict, eager: dict, keys: tuple[str, ...], name: str) -> None:
    """The same detections up to float noise. Near-equal scores may come out in another order, so rows are
    matched one to one (greedy nearest) rather than compared by position."""
    a, b = rows(ort, keys), rows(eager, keys)
    assert len(a) == len(b) > 0, name
    free = list(range(len(b)))
    for row in a:
        dist = [np.abs(row - b[j]).max() for j in free]
        best = int(np.argmin(dist))
        assert dist[best] < 2e-3, f"{name}: ORT detection {row.round(4)} has no eager match"
        free.pop(best)


def test_graph_decode_equals_pytorch_decode(model, exported, no_model):
    dm = DeployedModel(exported, threads=1)
    batch = next(heldout_batches(dm.manifest, 2, 2))
    prediction = Evaluator(dm, score=False).step(batch)
    got = {name: prediction.decoded(name) for name in dm.tasks}
    with torch.no_grad():
        out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam)
    for name, task in model.task_objects.items():
        want = task.decode(out[name], batch)
        assert len(got[name]) == len(want) == 2
        for g, w in zip(got[name], want, strict=True):
            if name == "detection2d":
                assert_boxes_match(g, w, ("boxes", "classes", "camera"), name)
                assert len(g["scores"]) == 12  # the manifest's task options reached the decoder
            elif name == "traffic_light":
                assert_boxes_match(g, w, ("boxes", "state", "camera", "lane"), name)
            elif name == "objects3d":
                assert_boxes_match(g, w, ("boxes", "classes", "velocity"), name)
            elif name == "depth":
                np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4)
            else:  # thresholded / argmax masks: a pixel may flip only where logits tie within float noise
                assert g.shape == w.shape and g.dtype == w.dtype
                assert (g != w).float().mean() < 1e-3, name


def test_run_infer_writes_pictures_and_json(exported, tmp_path, no_model):
    result = run_infer(exported, "synthetic", tmp_path / "out", frames=2, threads=1, ground_truth=True)
    out = tmp_path / "out"
    data = json.loads((out / "predictions.json").read_text())
    assert data == json.loads(json.dumps(result))
    assert len(data["frames"]) == 2 and data["camera_names"][0] == "main"
    frame = data["frames"][0]
    det = frame["tasks"]["detection2d"]
    assert len(det["boxes"]) == len(det["scores"]) == len(det["classes"]) == 12
    assert all(len(b) == 4 for b in det["boxes"]) and det["names"][0] == "car"
    assert len(frame["tasks"]["objects3d"]["boxes"][0]) == 7
    depth = frame["tasks"]["depth"]
    assert depth["shape"] == [8, 64, 128] and 0.5 <= depth["min"] <= depth["max"] <= 250.0
    arrays = np.load(out / depth["file"])
    assert arrays["depth"].shape == (8, 64, 128) and arrays["bev_semantic"].shape == (6, 32, 32)
    assert abs(sum(frame["tasks"]["drivable"]["fraction"].values()) - 1.0) < 1e-3
    img = Image.open(out / "frame_0001.png")
    assert img.width > 5 * 128 and img.height > 2 * 64
    colours = np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 100  # camera images and drawings, not a blank canvas


def test_cli_infer(exported, tmp_path, no_model):
    r = CliRunner().invoke(app, ["infer", str(exported), "--data", "synthetic", "--out", str(tmp_path / "o"),
                                 "--frames", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "frame_0000.png").is_file() and "detection2d: 12 objects" in r.output
    r = CliRunner().invoke(app, ["infer", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "missing" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["infer", str(exported), "--data", str(tmp_path / "no_shards"), "--out",
                                 str(tmp_path / "o3")])
    assert r.exit_code == 2 and "no_shards" in r.output


def test_cli_infer_tracks_objects3d_over_consecutive_frames(exported, tmp_path, no_model):
    r = CliRunner().invoke(app, ["infer", str(exported), "--data", "synthetic", "--out", str(tmp_path / "t"),
                                 "--frames", "3", "--threads", "1", "--track"])
    assert r.exit_code == 0, r.output
    assert "the objects3d tracks (track_id, velocity, score) carried from frame to frame" in " ".join(r.output.split())
    data = json.loads((tmp_path / "t" / "predictions.json").read_text())
    assert data["streamed"] and data["tracked"]["gate_m"] > 0
    assert [f["frame_index"] for f in data["frames"]] == [0, 1, 2]  # consecutive frames of one scene
    objects = [f["tasks"]["objects3d"] for f in data["frames"]]
    assert all(len(o["track_id"]) == len(o["boxes"]) == len(o["velocity"]) for o in objects)
    assert set(objects[0]["track_id"]) & set(objects[1]["track_id"])  # tracks carried from frame to frame


def test_cli_infer_track_on_a_graph_without_objects3d_names_the_option(checkpoint, tmp_path):
    """Before: "tracking follows objects3d boxes over streamed frames: it needs stream=True and an objects3d task",
    an argument of the evaluator the user never typed."""
    from hydranet.deploy import export_checkpoint

    graph = tmp_path / "drivable.onnx"
    export_checkpoint(checkpoint, graph, ["drivable"])
    r = CliRunner().invoke(app, ["infer", str(graph), "--out", str(tmp_path / "t"), "--frames", "2", "--track"])
    line = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert line.startswith(f"error: --track: tracking follows objects3d boxes over a scene's frames, and graph {graph} "
                           "has no objects3d head (['drivable'])"), line
    assert "stream=True" not in line and not (tmp_path / "t").exists()


@pytest.mark.parametrize("how", ["truncated", "crc"])
def test_cli_infer_on_a_corrupt_shard_exits_2_naming_it(exported, tmp_path, how):
    """A truncated shard or one with overwritten bytes (CRC32 mismatch): one ``error:`` line naming the shard
    (and sample), exit 2 — before: a ShardError traceback and exit 1."""
    from hydranet.world.config import WorldConfig
    from hydranet.world.generate import generate

    root = tmp_path / "data"
    world = {"seed": 1, "num_scenes": 1, "frames_per_scene": 2, "setup": {"image_size": [64, 128],
             "grid": {"x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0], "cell": 1.0}}}
    generate(root, WorldConfig(**world), frames=2, shard_size=2)
    shard = root / "shard-000000.tar"
    if how == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        _, offset, length, _ = json.loads((root / "manifest.json").read_text())["shards"][0]["index"][0]
        with shard.open("r+b") as f:
            f.seek(offset + length // 2)
            f.write(b"\xff" * 64)
    r = CliRunner().invoke(app, ["infer", str(exported), "--data", str(root), "--out", str(tmp_path / "o"),
                                 "--threads", "1"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    assert "error: " in r.output and "shard-000000.tar" in r.output and "[red]" not in r.output
    if how == "crc":
        assert "CRC32" in r.output and "000000000" in r.output


def test_infer_opens_data_for_the_graphs_setup(exported, tmp_path, no_model):
    """A world YAML without a setup renders the graph's (64x128, its ±16 m grid), as `predict` and `eval --data`
    do, in every form (`PATH`, `synthetic:PATH`, `world:PATH` without a `frames` option); a world declaring another
    setup is refused naming --data, before a frame runs."""
    partial = tmp_path / "partial.yaml"
    partial.write_text(json.dumps({"seed": 3, "num_scenes": 1, "frames_per_scene": 2}))  # default setup: 128x256
    for k, data in enumerate((str(partial), f"synthetic:{partial}", f"world:{partial}")):
        r = CliRunner().invoke(app, ["infer", str(exported), "--data", data, "--out", str(tmp_path / f"o{k}"),
                                     "--frames", "1", "--threads", "1", "--ground-truth"])
        assert r.exit_code == 0, (data, r.output)
        record = json.loads((tmp_path / f"o{k}" / "predictions.json").read_text())
        assert len(record["frames"]) == 1 and record["frames"][0]["scene_id"] == "world-3-000000"
        assert np.load(tmp_path / f"o{k}" / "frame_0000.npz")["depth"].shape == (8, 64, 128)
    other = tmp_path / "other.yaml"
    other.write_text(json.dumps({"num_scenes": 1, "frames_per_scene": 1, "setup": {"image_size": [32, 64]}}))
    r = CliRunner().invoke(app, ["infer", str(exported), "--data", f"world:{other}", "--out", str(tmp_path / "x"),
                                 "--threads", "1"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"--data world:{other}: images are 32x64 (HxW) but graph {exported} is built for 64x128" in \
        " ".join(r.output.split())
    assert not (tmp_path / "x").exists()


def test_infer_on_another_grid_needs_the_graphs_grid_only_for_labels_drawn_on_it(checkpoint, exported, tmp_path):
    """Predictions fit data of any BEV grid: without --ground-truth nothing checks the grid (before: bev_semantic
    decoded onto the data's label grid and failed). With it, only labels rasterised on the grid need the graph's:
    refused naming bev_semantic; a graph of objects3d alone draws its metric boxes (before: refused)."""
    from hydranet.deploy import export_checkpoint

    world = tmp_path / "fine.yaml"
    world.write_text(json.dumps({"seed": 3, "num_scenes": 1, "frames_per_scene": 1, "setup": {
        "image_size": [64, 128], "grid": {"x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0], "cell": 0.5}}}))
    r = CliRunner().invoke(app, ["infer", str(exported), "--data", str(world), "--out", str(tmp_path / "o"),
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "o" / "frame_0000.npz")["bev_semantic"].shape[-2:] == (32, 32)  # the graph's grid
    r = CliRunner().invoke(app, ["infer", str(exported), "--data", str(world), "--out", str(tmp_path / "gt"),
                                 "--threads", "1", "--ground-truth"])
    assert r.exit_code == 2 and "Traceback" not in r.output and not (tmp_path / "gt").exists()
    assert (f"--data {world}: BEV grid is x (-16.0, 16.0) m, y (-16.0, 16.0) m, cell 0.5 m (64x64) but graph "
            f"{exported} uses") in " ".join(r.output.split())
    assert "the labels of bev_semantic lie on the grid; leave out --ground-truth" in " ".join(r.output.split())
    boxes = tmp_path / "objects3d.onnx"
    export_checkpoint(checkpoint, boxes, ["objects3d"])
    result = run_infer(boxes, str(world), tmp_path / "boxes", threads=1, ground_truth=True)
    assert len(result["frames"]) == 1 and "objects3d" in result["frames"][0]["tasks"]


def test_infer_help_lists_the_data_forms():
    r = CliRunner().invoke(app, ["infer", "--help"], terminal_width=200)
    text = " ".join(r.output.replace("│", " ").split())
    for form in ("KIND:PATH", "shards (path or URL)", "a source YAML", "'synthetic'", "graph's setup"):
        assert form in text, form
