"""``hydranet predict``: a checkpoint's predictions on a dataset of another rig (1 camera, another image size)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hydranet.checkpoint import load_model, save_checkpoint
from hydranet.cli import app
from hydranet.data.convert import resize_sample
from hydranet.data.sample import Sample, collate
from hydranet.datasets import open_source
from hydranet.geometry import camera_extrinsics
from hydranet.model import ModelConfig, create_model
from hydranet.model.config import ALL_TASKS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": [64, 128],
                                            "grid": {"x_range": [-16, 16], "y_range": [-16, 16], "cell": 1.0}},
                             tasks={t: {} for t in ALL_TASKS})
    directory = tmp_path_factory.mktemp("ckpt") / "run" / "checkpoints" / "step_00000000"
    save_checkpoint(directory, create_model(cfg), {"model_config": cfg.model_dump(mode="json"), "config": {},
                                                   "step": 0})
    return directory


def _dash_cam(tmp: Path, frames: int = 2) -> Path:
    """A 1-camera fleet at 360x640 (the model was built for 8 cameras at 64x128)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(frames):
        Image.fromarray(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)).save(tmp / f"{i}.jpg")
        lines.append({"scene_id": "dash", "frame_index": i, "timestamp": i * 0.1,
                      "T_world_from_ego": np.eye(4).tolist(),
                      "cameras": {"front": {"image": f"{i}.jpg", "K": [[500, 0, 320], [0, 500, 180], [0, 0, 1]],
                                            "T_ego_from_cam": camera_extrinsics((1.5, 0, 1.3), 0, 0).tolist()}},
                      "labels": {"detection2d": {"boxes": [[100, 100, 200, 180]], "classes": ["car"], "camera": [0]}}})
    (tmp / "frames.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    return tmp / "frames.jsonl"


def test_predict_runs_any_rig_and_matches_the_model(checkpoint, tmp_path):
    index = _dash_cam(tmp_path)
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["predict", str(checkpoint), "--data", f"frames:{index}", "--out", str(out),
                                      "--tasks", "detection2d,drivable,depth,objects3d", "--ground-truth"])
    assert result.exit_code == 0, result.output
    pred = json.loads((out / "predictions.json").read_text())
    assert len(pred["frames"]) == 2 and pred["tasks"] == ["detection2d", "drivable", "depth", "objects3d"]
    assert pred["frames"][0]["camera_names"] == ["front"]
    assert pred["frames"][0]["image_size"] == [64, 128]  # the pixels its boxes are in (the source's: 360x640)
    for k in range(2):
        assert (out / f"frame_{k:04d}.png").stat().st_size > 1000
        assert np.load(out / f"frame_{k:04d}.npz")["drivable"].shape == (1, 64, 128)
    # The same numbers as the model run by hand with the 7 missing cameras filled with noise and marked failed:
    # their content must not matter (fusion ignores them; camera outputs are per camera).
    model, _ = load_model(checkpoint)
    sample = resize_sample(open_source({"kind": "frames", "index": str(index)})[1], (64, 128))
    noise = torch.randint(0, 256, (7, 3, 64, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    images = torch.cat([sample.images, noise])[None]
    K = sample.intrinsics.expand(8, 3, 3)[None]
    T = torch.cat([sample.T_ego_from_cam, camera_extrinsics((0, 0, 1.5), 90, 0).float().expand(7, 4, 4)])[None]
    valid = torch.tensor([[True] + [False] * 7])
    with torch.inference_mode():
        outputs = model(images, K, T, tasks=["depth", "objects3d"], camera_valid=valid)
    padded = collate([Sample(images=images[0], intrinsics=K[0], T_ego_from_cam=T[0], T_world_from_ego=torch.eye(4),
                             timestamp=0.0, scene_id="x", camera_names=tuple(f"c{i}" for i in range(8)))])
    depth = model.task_objects["depth"].decode(outputs["depth"], padded)[0][:1]
    np.testing.assert_allclose(np.load(out / "frame_0001.npz")["depth"], depth.numpy(), rtol=1e-4)
    assert float(depth.std()) > 0  # a real map, not a constant
    decoded = model.task_objects["objects3d"].decode(outputs["objects3d"], padded)[0]
    np.testing.assert_allclose(pred["frames"][1]["tasks"]["objects3d"]["scores"], decoded["scores"].numpy(),
                               atol=1e-4)


def test_predict_errors_exit_2(checkpoint, tmp_path):
    index = _dash_cam(tmp_path, frames=1)
    runner = CliRunner()
    bad_task = runner.invoke(app, ["predict", str(checkpoint), "--data", f"frames:{index}", "--out",
                                   str(tmp_path / "p"), "--tasks", "segmentation"])
    assert bad_task.exit_code == 2 and "not heads of this model" in bad_task.output
    bad_data = runner.invoke(app, ["predict", str(checkpoint), "--data", str(tmp_path / "nothing"), "--out",
                                   str(tmp_path / "p")])
    # named as the option the user typed, like every other command's option errors (before: no "--data:")
    assert bad_data.exit_code == 2, bad_data.output
    assert f"error: --data {tmp_path / 'nothing'}: no such dataset" in bad_data.output, bad_data.output
    bad_source = runner.invoke(app, ["predict", str(checkpoint), "--data", "nosuchkind:data", "--out",
                                     str(tmp_path / "p")])
    assert bad_source.exit_code == 2 and "error: --data nosuchkind:data" in bad_source.output, bad_source.output


def test_predict_refuses_ground_truth_of_another_vocabulary(checkpoint, tmp_path):
    """Labels whose class ids mean other classes than the model's cannot be drawn beside its predictions: a
    nuScenes bus would be named after the model's class of the same index (before: drawn so, silently)."""
    from hydranet.predict import run_predict
    from hydranet.setup import SetupMismatchError

    index = _dash_cam(tmp_path, frames=1)
    data = {"kind": "frames", "index": str(index), "model_classes": ["pedestrian", "car"]}
    with pytest.raises(SetupMismatchError, match=r"detection2d classes are \['pedestrian', 'car'\]"):
        run_predict(checkpoint, data, tmp_path / "gt", ground_truth=True, tasks=["detection2d"])
    assert not (tmp_path / "gt").exists()
    run_predict(checkpoint, data, tmp_path / "no_gt", tasks=["detection2d"])  # predictions alone: any vocabulary
    run_predict(checkpoint, data, tmp_path / "depth", ground_truth=True, tasks=["depth"])  # no class labels drawn


def test_ground_truth_on_another_grid_is_refused_only_for_labels_on_the_grid(checkpoint):
    """3D boxes are in metres: they draw beside a model of any grid (before: ``view --tasks objects3d`` was refused
    for data on 0.5 m cells). The BEV map is rasterised on the grid: refused, the message naming the task."""
    from hydranet.predict import check_labels_drawable
    from hydranet.setup import SetupMismatchError
    from hydranet.world import SyntheticWorld, WorldConfig

    net, _ = load_model(checkpoint)
    fine = net.setup.model_dump(mode="json") | {"grid": {"x_range": [-16, 16], "y_range": [-16, 16], "cell": 0.5}}
    world = SyntheticWorld(WorldConfig(seed=3, num_scenes=1, frames_per_scene=1, setup=fine))
    tasks = net.task_objects
    check_labels_drawable(world, net.setup, {"objects3d": tasks["objects3d"]}, "--data w", "--model m")
    with pytest.raises(SetupMismatchError, match=r"cell 0\.5 m.*the labels of bev_semantic lie on the grid"):
        check_labels_drawable(world, net.setup, {t: tasks[t] for t in ("objects3d", "bev_semantic")}, "--data w",
                              "--model m")


def test_predict_on_synthetic_renders_the_models_grid_and_size(checkpoint, tmp_path):
    """``--data synthetic`` renders the world at the model's image size and BEV grid (±16 m here, not the
    world's default), so the BEV tasks' labels and predictions line up."""
    result = CliRunner().invoke(app, ["predict", str(checkpoint), "--data", "synthetic", "--frames", "1",
                                      "--ground-truth", "-o", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pred" / "frame_0000.png").is_file()


def test_predict_renders_a_world_yaml_at_the_models_setup(checkpoint, tmp_path):
    """A world YAML without a setup, in any form (`world:PATH` needs no `frames` option), renders the model's
    setup, as `--data synthetic` does: its ground-truth BEV map lies on the model's grid, so it can be drawn."""
    partial = tmp_path / "partial.yaml"
    partial.write_text(json.dumps({"seed": 3, "num_scenes": 1, "frames_per_scene": 2}))  # default setup: 128x256
    for k, data in enumerate((f"world:{partial}", str(partial))):
        result = CliRunner().invoke(app, ["predict", str(checkpoint), "--data", data, "--frames", "1",
                                          "--ground-truth", "-o", str(tmp_path / f"pred{k}")])
        assert result.exit_code == 0, (data, result.output)
        pred = json.loads((tmp_path / f"pred{k}" / "predictions.json").read_text())
        assert len(pred["frames"]) == 1 and pred["frames"][0]["scene_id"] == "world-3-000000"
        assert np.load(tmp_path / f"pred{k}" / "frame_0000.npz")["bev_semantic"].shape[-2:] == (32, 32)


def _temporal_checkpoint_and_scenes(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """An untrained temporal checkpoint whose memory changes its outputs, and two frame indexes of the same two
    images: one scene (the second frame reads the first one's memory) and split into two scenes."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": [64, 128],
                                            "grid": {"x_range": [-16, 16], "y_range": [-16, 16], "cell": 1.0}},
                             fusion={"temporal": {"time_queue": 1, "space_queue": 0}},
                             tasks={"objects3d": {"score_threshold": 0.0}})  # every peak: scores to compare
    model = create_model(cfg)
    torch.nn.init.normal_(model.fusion.temporal.out.weight, std=0.2)  # untrained, the memory adds nothing
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000000"
    save_checkpoint(ckpt, model, {"model_config": cfg.model_dump(mode="json"), "config": {}, "step": 0})
    index = _dash_cam(tmp_path)
    lines = index.read_text().splitlines()
    split = tmp_path / "split.jsonl"  # the same images, the second frame in a scene of its own
    split.write_text("\n".join([lines[0], lines[1].replace('"scene_id": "dash"', '"scene_id": "other"')]))
    return ckpt, {"scene": index, "split": split}


def test_predict_streams_a_model_with_the_video_memory_within_a_scene(tmp_path):
    """A temporal model's frames are streamed in order: the second frame of a scene is read with the first one's
    memory (it differs from the same images where the second frame starts a new scene), the first frame not."""
    ckpt, indexes = _temporal_checkpoint_and_scenes(tmp_path)
    scores = {}
    for name, data in indexes.items():
        out = tmp_path / name
        r = CliRunner().invoke(app, ["predict", str(ckpt), "--data", f"frames:{data}", "--out", str(out)])
        assert r.exit_code == 0, r.output
        frames = json.loads((out / "predictions.json").read_text())["frames"]
        scores[name] = [np.asarray(f["tasks"]["objects3d"]["scores"]) for f in frames]
    np.testing.assert_array_equal(scores["scene"][0], scores["split"][0])
    assert scores["scene"][1].shape != scores["split"][1].shape or \
        not np.array_equal(scores["scene"][1], scores["split"][1])


def test_view_streams_a_model_with_the_video_memory_as_predict_does(tmp_path):
    """Before: ``view --model`` ran every frame from an empty memory, so a video model's recording was not what
    ``predict``, ``eval`` and the exported graph give."""
    df = pytest.importorskip("rerun.dataframe")
    ckpt, indexes = _temporal_checkpoint_and_scenes(tmp_path)
    labels = {}
    for name, data in indexes.items():
        out = tmp_path / f"{name}.rrd"
        r = CliRunner().invoke(app, ["view", "--model", str(ckpt), "--data", f"frames:{data}", "--tasks", "objects3d",
                                     "-o", str(out)])
        assert r.exit_code == 0, r.output
        table = df.load_recording(str(out)).view(index="frame", contents="/world/ego/prediction/boxes3d")
        labels[name] = table.select().read_all().column("/world/ego/prediction/boxes3d:Text").to_pylist()
    assert labels["scene"][0] == labels["split"][0] and labels["scene"][1] != labels["split"][1]


def test_predict_tracks_objects3d_over_a_scenes_frames(tmp_path):
    """``--track`` streams each scene's frames in order and tracks the objects3d boxes, as ``infer --track`` does
    for a graph: every box gets a track_id and its track's velocity, and a track goes on from frame to frame;
    without objects3d among the heads run there is nothing to track (exit 2, before any frame). The reference
    model, whose boxes are real detections."""
    checkpoint = "zoo:tiny-world"
    world = tmp_path / "w.yaml"
    world.write_text(json.dumps({"seed": 3, "num_scenes": 1, "frames_per_scene": 3}))
    result = CliRunner().invoke(app, ["predict", checkpoint, "--data", str(world), "--track", "--tasks",
                                      "objects3d", "-o", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "tracked: the objects3d boxes" in " ".join(result.output.split())
    pred = json.loads((tmp_path / "t" / "predictions.json").read_text())
    assert pred["streamed"] and pred["tracked"]["gate_m"] > 0
    assert [f["frame_index"] for f in pred["frames"]] == [0, 1, 2]
    objects = [f["tasks"]["objects3d"] for f in pred["frames"]]
    assert all(len(o["track_id"]) == len(o["boxes"]) == len(o["velocity"]) for o in objects)
    assert objects[0]["boxes"] and set(objects[0]["track_id"]) & set(objects[1]["track_id"])
    refused = CliRunner().invoke(app, ["predict", checkpoint, "--data", str(world), "--track", "--tasks",
                                       "detection2d", "-o", str(tmp_path / "none")])
    assert refused.exit_code == 2 and not (tmp_path / "none").exists()
    # named as the user typed it (before: "it needs stream=True and an objects3d task", the evaluator's argument)
    assert "error: --track: tracking follows objects3d boxes over a scene's frames, and --tasks ['detection2d'] " \
           "leaves it out" in " ".join(refused.output.split()), refused.output
