"""The exported graph of a temporal model: state and ego motion in, new state out; 10 streamed frames of ONNX
Runtime match eager PyTorch within 1e-3, and the runtime owns (and resets) the memory."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.data.sample import collate
from hydranet.deploy.export import export_onnx
from hydranet.deploy.manifest import load_manifest, manifest_path
from hydranet.deploy.quantize import WorldCalibrationReader
from hydranet.deploy.runtime import DeployedModel
from hydranet.deploy.verify import PARITY_TOLERANCE, parity
from hydranet.eval.loop import Evaluator, Streamer
from hydranet.model import ModelConfig, create_model
from hydranet.world import SyntheticWorld, WorldConfig

pytest.importorskip("onnxruntime")

GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "cell": 1.0}


@pytest.fixture(scope="module", params=[0, 2], ids=["memory", "memory+correlation"])
def temporal(request, tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", setup={"image_size": (64, 128), "grid": GRID}, trunk={"name": "regnet_tiny"},
                             neck={"channels": 16, "min_level": 2},
                             fusion={"channels": 16, "encoder_blocks": 1,
                                     "temporal": {"time_queue": 2, "space_queue": 1, "push_every_metres": 1.0,
                                                  "correlation_radius": request.param}},
                             bev_channels=16, tasks={"objects3d": {"score_threshold": 0.0},
                                                                "drivable": {}})
    model = create_model(cfg).eval()
    torch.nn.init.normal_(model.fusion.temporal.out.weight, std=0.2)  # make the memory matter
    path = tmp_path_factory.mktemp("stream") / "model.onnx"
    manifest = export_onnx(model, path)
    world = SyntheticWorld(WorldConfig(seed=4, num_scenes=2, frames_per_scene=6, setup={"image_size": (64, 128),
                                       "grid": {"cell": 1.0, "x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0)}}))
    return model, path, manifest, world


def test_graph_takes_state_and_ego_motion_and_returns_the_new_state(temporal):
    import onnx

    _, path, manifest, _ = temporal
    g = onnx.load(str(path)).graph
    inputs = [i.name for i in g.input]
    assert inputs[:6] == ["images", "intrinsics", "T_ego_from_cam", "camera_valid", "T_world_from_ego", "timestamp"]
    assert "state.hidden" in inputs and "state.queue" in inputs
    outputs = [o.name for o in g.output]
    assert "new_state.hidden" in outputs and "objects3d.heatmap" in outputs
    assert [i.name for i in manifest.inputs] == inputs
    # The manifest names every state output, its shape and the state input it feeds back into.
    assert [s.name for s in manifest.state_outputs] == [o for o in outputs if o.startswith("new_state.")]
    shapes = {i.name: i.shape for i in manifest.inputs}
    assert all(shapes[s.feeds] == s.shape for s in manifest.state_outputs)
    assert len(manifest.state_outputs) == len([i for i in inputs if i.startswith("state.")])


def test_verify_streams_consecutive_frames_and_compares_the_state(temporal):
    from hydranet.deploy.runtime import DeployedModel

    model, path, manifest, _ = temporal
    diffs = parity(model, DeployedModel(path), frames=3)
    assert {s.name for s in manifest.state_outputs} <= set(diffs)
    assert max(diffs.values()) <= PARITY_TOLERANCE, diffs
    assert not hasattr(model, "stream_state")  # the memory is the Streamer's, never the model's


def test_ten_streamed_frames_onnx_equal_eager(temporal):
    from hydranet.deploy.runtime import DeployedModel

    model, path, _, world = temporal
    dm = DeployedModel(path)
    batches = [collate([world[i]]) for i in range(6)] + [collate([world[i]]) for i in range(6, 10)]
    diffs = parity(model, dm, batches=batches)  # 6 frames of scene 0, then 4 of scene 1 (a reset)
    assert max(diffs.values()) <= PARITY_TOLERANCE, diffs
    # The memory really is carried: frame 5 with history differs from frame 5 alone.
    stream = Streamer(dm)
    for i in range(5):
        stream(collate([world[i]]), ["objects3d"])
    with_history = stream(collate([world[5]]), ["objects3d"])["objects3d"]["heatmap"]
    stream.reset()
    alone = stream(collate([world[5]]), ["objects3d"])["objects3d"]["heatmap"]
    # A temporal graph has no single-frame path: the predictor loop streams it unless told otherwise (an error).
    assert Evaluator(dm, score=False).streamer is not None
    with pytest.raises(ValueError, match="runs only with its memory"):
        Evaluator(dm, score=False, stream=False)
    assert (with_history - alone).abs().max() > 1e-3
    with pytest.raises(ValueError, match="ego motion and the state"):
        b = collate([world[0]])
        dm.run_arrays(b.images.numpy(), b.intrinsics.numpy(), b.T_ego_from_cam.numpy())


def test_export_command_lists_the_state_outputs(temporal, tmp_path):
    """``hydranet export`` prints every graph output, the memory the runtime feeds back included."""
    from typer.testing import CliRunner

    from hydranet.checkpoint import save_checkpoint
    from hydranet.cli import app

    model, _, manifest, _ = temporal
    checkpoint = tmp_path / "run" / "step_00000000"
    save_checkpoint(checkpoint, model, {"model_config": model.cfg.model_dump(mode="json"), "config": {}, "step": 0})
    r = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "m.onnx")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if "new_state." in line]
    assert len(rows) == len(manifest.state_outputs) and all("feeds state." in line for line in rows)
    # ``hydranet infer`` streams it and says so: 2 scenes x 2 frames, the memory reset at each scene's start.
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump({"seed": 4, "num_scenes": 2, "frames_per_scene": 2, "setup": {
        "image_size": [64, 128], "grid": {"cell": 1.0, "x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0]}}}))
    r = CliRunner().invoke(app, ["infer", str(tmp_path / "m.onnx"), "--data", str(world), "-o", str(tmp_path / "o"),
                                 "--threads", "1"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "streamed: the memory carried from frame to frame, reset at the first frame of each of its 2 scenes" \
        in " ".join(r.output.split())


def test_a_streaming_graph_quantizes_on_streamed_states_and_scores_on_sequences(temporal, tmp_path):
    """``hydranet quantize`` on a temporal graph: the calibration feeds every frame with the state the fp32 graph
    carried to it (before: a KeyError on T_world_from_ego), and the drop is measured streaming consecutive frames."""
    _, path, manifest, _ = temporal
    reader = WorldCalibrationReader(manifest, 3, fp32=DeployedModel(path, threads=1))
    feeds = [reader.get_next() for _ in range(3)]
    assert reader.get_next() is None
    assert all(set(f) == set(manifest.input_names()) for f in feeds)
    assert float(abs(feeds[0]["state.hidden"]).sum()) == 0.0  # the first frame starts from the reset state
    assert float(abs(feeds[2]["state.hidden"]).sum()) > 0.0  # later frames carry the memory
    out = tmp_path / "q.int8.onnx"
    r = CliRunner().invoke(app, ["quantize", str(path), "-o", str(out), "--calib-frames", "2", "--eval-frames", "2",
                                 "--max-drop", "10", "--threads", "1", "--json", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    assert "2 held-out frames may be too few to resolve --max-drop" in " ".join(r.output.split())
    assert load_manifest(manifest_path(out)).quantization is not None
    report = json.loads((tmp_path / "q.json").read_text())
    assert set(report["comparisons"]["heldout"]["drop"]) == {"objects3d", "drivable"}
