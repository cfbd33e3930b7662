"""Export: one graph with named outputs per head tensor, a complete manifest, sub-graphs dropped, clear errors."""

import json
import re

import onnx
import pytest
from deploy_testkit import CAMERA_TASKS, TASKS
from typer.testing import CliRunner

import hydranet
from hydranet.cli import app
from hydranet.deploy import ExportError, export_onnx, load_manifest, manifest_path
from hydranet.deploy.manifest import ExportManifestError
from hydranet.model import PIXEL_MEAN, PIXEL_STD
from hydranet.setup import default_rig


def test_manifest_describes_graph(exported, checkpoint, model):
    m = load_manifest(exported)
    assert manifest_path(exported).name == "model.manifest.json"
    graph = onnx.load(str(exported))
    onnx.checker.check_model(graph)
    # Opset stated and true.
    assert m.opset == 17
    assert {o.domain: o.version for o in graph.opset_import}[""] == 17
    # Inputs: names, shapes, dtypes exactly as the graph has them.
    rig = default_rig((64, 128))
    assert m.camera_names == list(rig.names)
    want = {"images": ([1, 8, 3, 64, 128], onnx.TensorProto.UINT8),
            "intrinsics": ([1, 8, 3, 3], onnx.TensorProto.FLOAT),
            "T_ego_from_cam": ([1, 8, 4, 4], onnx.TensorProto.FLOAT),
            "camera_valid": ([1, 8], onnx.TensorProto.BOOL)}  # graphs with fusion take the dead-camera mask
    assert [i.name for i in m.inputs] == list(want)
    for spec, gi in zip(m.inputs, graph.graph.input, strict=True):
        shape = [d.dim_value for d in gi.type.tensor_type.shape.dim]
        assert gi.name == spec.name and shape == spec.shape == want[spec.name][0]
        assert gi.type.tensor_type.elem_type == want[spec.name][1]
    assert m.inputs[0].dtype == "uint8" and m.inputs[1].dtype == "float32"
    assert m.normalisation.mean == list(PIXEL_MEAN) and m.normalisation.std == list(PIXEL_STD)
    assert m.normalisation.inside_graph
    # Geometry: the model's setup with the exported rig (explicit K, T, sizes) + grid; K/T are inputs.
    assert m.setup == model.setup and m.setup.rig() == rig
    assert "inputs" in m.rig_note
    assert json.loads(m.to_json())["setup"]["grid"] == {"x_range": [-16.0, 16.0], "y_range": [-16.0, 16.0],
                                                         "cell": 1.0}
    # Outputs: one per head tensor, named task.key, in the graph with the manifest's shapes.
    graph_out = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output}
    assert set(graph_out) == set(m.output_names())
    for o in m.outputs:
        assert o.name == f"{o.task}.{o.key}" and graph_out[o.name] == o.shape
        assert o.decoder == m.tasks[o.task].decoder and o.decoder.endswith(".decode")
    assert set(m.tasks) == set(TASKS)
    assert m.outputs[0].shape[:2] == [1, 8] or m.tasks[m.outputs[0].task].space == "bev"
    heads = {(t, k) for t in TASKS for k in model.heads[t].head.branches}
    assert {(o.task, o.key) for o in m.outputs} == heads
    # Task options travel (decoders need them), as do the head context facts decoders read.
    assert m.tasks["detection2d"].options == TASKS["detection2d"]
    assert m.tasks["objects3d"].space == "bev" and m.tasks["drivable"].space == "camera"
    assert m.head_context.camera_strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
    # Provenance.
    state = json.loads((checkpoint / "state.json").read_text())
    assert m.trunk_hash == state["trunk_hash"]
    assert m.hydranet_version == hydranet.__version__
    assert m.checkpoint == str(checkpoint)


def test_camera_only_export_has_no_fusion(model, exported, tmp_path):
    m = export_onnx(model, tmp_path / "cam.onnx", tasks=",".join(CAMERA_TASKS))
    assert set(m.tasks) == set(CAMERA_TASKS)
    cam, full = onnx.load(str(tmp_path / "cam.onnx")), onnx.load(str(exported))
    cam_ops, full_ops = [n.op_type for n in cam.graph.node], [n.op_type for n in full.graph.node]
    assert "GridSample" in full_ops and "GridSample" not in cam_ops
    assert any("fusion" in n.name for n in full.graph.node)
    assert not any("fusion" in n.name for n in cam.graph.node)
    assert not any("fusion" in i.name or "bev_semantic" in i.name for i in cam.graph.initializer)
    assert len(cam_ops) < 0.8 * len(full_ops)
    assert (tmp_path / "cam.onnx").stat().st_size < 0.8 * exported.stat().st_size


def test_bev_only_export_keeps_fusion_drops_camera_heads(model, tmp_path):
    m = export_onnx(model, tmp_path / "bev.onnx", tasks=["objects3d"])
    g = onnx.load(str(tmp_path / "bev.onnx"))
    assert "GridSample" in [n.op_type for n in g.graph.node]
    assert not any(k in n.name for n in g.graph.node for k in ("heads.detection2d", "heads.lanes", "heads.depth"))
    assert {o.task for o in m.outputs} == {"objects3d"}


def test_export_errors(model, tmp_path):
    with pytest.raises(ExportError, match="not configured.*configured"):
        export_onnx(model, tmp_path / "x.onnx", tasks="detection2d,flying_cars")
    with pytest.raises(ExportError, match="opset 13"):
        export_onnx(model, tmp_path / "x.onnx", opset=13)
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_errors(checkpoint, tmp_path):
    runner = CliRunner()
    missing = tmp_path / "no_such_run"
    r = runner.invoke(app, ["export", str(missing), "-o", str(tmp_path / "a.onnx")])
    assert r.exit_code == 2 and "no_such_run" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["export", str(checkpoint), "--tasks", "drivable,warp_drive", "-o",
                            str(tmp_path / "b.onnx")])
    assert r.exit_code == 2 and "warp_drive" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "b.onnx").exists()
    # A corrupt checkpoint names its file.
    bad = tmp_path / "bad" / "step_1"
    bad.mkdir(parents=True)
    (bad / "state.json").write_text("{not json")
    r = runner.invoke(app, ["export", str(bad), "-o", str(tmp_path / "c.onnx")])
    assert r.exit_code == 2 and "state.json" in r.output


def test_cli_export_blames_out_for_a_bad_output(checkpoint, tmp_path):
    """An -o that is no NAME.onnx, or a file hydranet did not export, is --out's fault: before, the line began
    ``CHECKPOINT:`` (the output check's error is a ValueError, caught as the checkpoint's)."""
    runner = CliRunner()
    foreign = tmp_path / "mine.onnx"
    foreign.write_bytes(b"not a graph hydranet wrote")
    for target, words in ((tmp_path / "model.txt", "choose an --out ending in .onnx"),
                          (foreign, "is not a graph hydranet exported")):
        r = runner.invoke(app, ["export", str(checkpoint), "-o", str(target)])
        line = " ".join(r.output.split())
        assert r.exit_code == 2, r.output
        assert line.startswith(f"error: --out: {target}") and words in line and "CHECKPOINT" not in line, line
    assert foreign.read_bytes() == b"not a graph hydranet wrote" and not (tmp_path / "model.txt").exists()


def test_export_never_replaces_a_file_it_did_not_write(model, tmp_path):
    """Before: ``-o frames.jsonl`` replaced the user's index with the graph, ``-o DATA/manifest.json`` destroyed a
    dataset, and ``-o x.json`` failed after writing (ONNX read the graph back as JSON)."""
    from hydranet.outputs import OutputError

    index = tmp_path / "frames.jsonl"
    index.write_text('{"scene_id": "drive"}\n')
    for target in (index, tmp_path / "graph.json"):
        with pytest.raises(OutputError, match=r"ending in \.onnx"):
            export_onnx(model, target, tasks="drivable")
    assert index.read_text() == '{"scene_id": "drive"}\n' and not (tmp_path / "graph.json").exists()
    foreign = tmp_path / "mine.onnx"
    foreign.write_bytes(b"not a graph hydranet wrote")
    with pytest.raises(OutputError, match="is not a graph hydranet exported"):
        export_onnx(model, foreign, tasks="drivable")
    assert foreign.read_bytes() == b"not a graph hydranet wrote"
    (tmp_path / "data.manifest.json").write_text('{"format": "hydranet-shards/1"}')  # what NAME.onnx would replace
    with pytest.raises(OutputError, match="data.manifest.json exists and is not a graph manifest"):
        export_onnx(model, tmp_path / "data.onnx", tasks="drivable")
    graph = tmp_path / "model.onnx"
    export_onnx(model, graph, tasks="drivable")
    export_onnx(model, graph, tasks="drivable,depth")  # an earlier export is replaced, as every re-export does
    assert sorted(load_manifest(graph).tasks) == ["depth", "drivable"]


def test_manifest_errors(exported, tmp_path):
    with pytest.raises(ExportManifestError, match="not found"):
        load_manifest(tmp_path / "nothing.onnx")
    bad = tmp_path / "m.manifest.json"
    data = json.loads(manifest_path(exported).read_text())
    data["outputs"] = data["outputs"][1:]  # a task lists an output the graph no longer declares
    bad.write_text(json.dumps(data))
    with pytest.raises(ExportManifestError, match="not graph outputs"):
        load_manifest(bad)
    data = json.loads(manifest_path(exported).read_text())
    data["batch"] = 0
    bad.write_text(json.dumps(data))
    with pytest.raises(ExportManifestError, match="batch"):
        load_manifest(bad)


def _first_number(node, path=()):
    """The path of the first int/float leaf under ``node`` (dicts and lists), or None."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (*path, key)
        found = _first_number(value, (*path, key))
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_anywhere_in_an_export_manifest_is_refused(exported, tmp_path, token):
    # Before: only the setup was checked; a NaN in the normalisation or the architecture record was accepted.
    text = manifest_path(exported).read_text()
    bad = tmp_path / "m.manifest.json"
    for key in ("normalisation", "architecture"):
        changed = json.loads(text)
        path = _first_number(changed[key], (key,))
        node = changed
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = float(token.replace("Infinity", "inf"))
        bad.write_text(json.dumps(changed))  # json writes NaN / Infinity tokens
        field = ".".join(map(str, path))
        with pytest.raises(ExportManifestError, match=rf"invalid manifest \({re.escape(field)}: Input should be a "
                                                      r"finite number"):
            load_manifest(bad)
