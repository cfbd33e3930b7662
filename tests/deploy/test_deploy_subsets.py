"""Export -> verify -> quantize -> infer for camera-only, BEV-only and all-task graphs; the
opset check blames what really needs the opset; the manifest pins the graph's bytes (sha256)."""

import json

import onnx
import pytest
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.deploy import DeployedModel, load_manifest
from hydranet.deploy.export import MAX_OPSET, ExportError, export_onnx
from hydranet.deploy.manifest import ExportManifestError, manifest_path
from hydranet.deploy.quantize import quantize_graph

SUBSETS = {"camera": "drivable,lanes,depth", "bev": "bev_semantic,objects3d", "all": None}


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_export_verify_quantize_infer(checkpoint, tmp_path, subset):
    runner = CliRunner()
    graph = tmp_path / f"{subset}.onnx"
    tasks = ["--tasks", SUBSETS[subset]] if SUBSETS[subset] else []
    r = runner.invoke(app, ["export", str(checkpoint), *tasks, "-o", str(graph), "--verify", "--verify-frames", "1",
                            "--threads", "1"])
    assert r.exit_code == 0, r.output  # exited 2 for the camera-only graph before: manifest listed K and T
    m = load_manifest(graph)
    graph_inputs = [i.name for i in onnx.load(str(graph), load_external_data=False).graph.input]
    assert m.input_names() == graph_inputs  # the manifest lists only the inputs the graph really has
    expected = ["images"] if subset == "camera" else ["images", "intrinsics", "T_ego_from_cam", "camera_valid"]
    assert graph_inputs == expected

    r = runner.invoke(app, ["quantize", str(graph), "--calib-frames", "1", "--eval-frames", "1", "--max-drop", "10",
                            "--threads", "1"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    int8 = graph.with_name(f"{subset}.int8.onnx")
    assert load_manifest(int8).input_names() == m.input_names()

    for g in (graph, int8):
        out = tmp_path / f"infer_{g.stem}"
        r = runner.invoke(app, ["infer", str(g), "--frames", "1", "--out", str(out), "--threads", "1"])
        assert r.exit_code == 0, r.output
        assert (out / "frame_0000.png").is_file()
        assert set(json.loads((out / "predictions.json").read_text())["frames"][0]["tasks"]) == set(m.tasks)
    if subset == "camera":  # nothing to track without 3D boxes: said before any frame is rendered
        r = runner.invoke(app, ["infer", str(graph), "--frames", "1", "--out", str(tmp_path / "t"), "--track"])
        assert r.exit_code == 2 and "tracking follows objects3d boxes" in " ".join(r.output.split())


def test_opset_15_camera_only_is_accepted(model, tmp_path):
    m = export_onnx(model, tmp_path / "cam15.onnx", tasks="drivable,lanes,depth,detection2d", opset=15)
    g = onnx.load(str(tmp_path / "cam15.onnx"))
    assert m.opset == 15 and g.opset_import[0].version == 15
    assert "GridSample" not in [n.op_type for n in g.graph.node]
    DeployedModel(tmp_path / "cam15.onnx", threads=1)


def test_opset_too_old_for_bev_blames_gridsample_and_opset(model, checkpoint, tmp_path):
    with pytest.raises(ExportError, match="BEV task.*objects3d.*GridSample.*opset >= 16.*camera-only tasks "
                                          r"\(drivable\) alone export at opset >= 13") as e:
        export_onnx(model, tmp_path / "x.onnx", tasks="drivable,objects3d", opset=15)
    assert e.value.option == "--opset"
    with pytest.raises(ExportError, match="opset 12 is too old"):
        export_onnx(model, tmp_path / "x.onnx", tasks="drivable", opset=12)
    r = CliRunner().invoke(app, ["export", str(checkpoint), "--tasks", "objects3d", "--opset", "15", "-o",
                                 str(tmp_path / "y.onnx")])
    assert r.exit_code == 2 and "GridSample" in r.output and "--opset" in r.output and "--tasks" not in r.output


def test_opset_newer_than_torch_exports_is_one_line_blaming_opset(model, checkpoint, tmp_path, capfd):
    """Above the exporter's newest opset torch dumped the traced graph to stdout and raised RuntimeError
    ("Unsupported onnx_opset_version: 25"), an internal error (exit 1); now refused first, exit 2, one line."""
    m = export_onnx(model, tmp_path / "max.onnx", tasks="drivable,objects3d", opset=MAX_OPSET)  # the bound is real
    assert m.opset == MAX_OPSET and onnx.load(str(tmp_path / "max.onnx")).opset_import[0].version == MAX_OPSET
    with pytest.raises(ExportError, match=f"opset {MAX_OPSET + 1} is too new.*opsets 16..{MAX_OPSET}") as e:
        export_onnx(model, tmp_path / "x.onnx", tasks="drivable,objects3d", opset=MAX_OPSET + 1)
    assert e.value.option == "--opset"
    with pytest.raises(ExportError, match=f"opsets 13..{MAX_OPSET}"):  # camera-only: its own low bound
        export_onnx(model, tmp_path / "x.onnx", tasks="drivable", opset=99)
    capfd.readouterr()
    for opset in ("25", "99"):
        r = CliRunner().invoke(app, ["export", str(checkpoint), "--opset", opset, "-o", str(tmp_path / "y.onnx")])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert "--opset" in lines[0] and f"opset {opset}" in lines[0] and f"16..{MAX_OPSET}" in lines[0]
        assert "internal error" not in r.output and not (tmp_path / "y.onnx").exists()
    assert "graph(" not in capfd.readouterr().out  # no TorchScript graph dump on the process's stdout


def flip_weight_bytes(graph, count=20):
    data = bytearray(graph.read_bytes())
    mid = len(data) // 2  # inside the initializers, far from the header
    for i in range(count):
        data[mid + 97 * i] ^= 0x5A
    graph.write_bytes(bytes(data))


def test_changed_graph_bytes_are_refused(model, tmp_path):
    graph = tmp_path / "cam.onnx"
    m = export_onnx(model, graph, tasks="drivable,depth")
    assert len(m.graph_sha256) == 64 and json.loads(manifest_path(graph).read_text())["graph_sha256"] == m.graph_sha256
    int8 = tmp_path / "cam.int8.onnx"
    q = quantize_graph(graph, int8, calib_frames=1)
    assert q.graph_sha256 != m.graph_sha256 and DeployedModel(int8, threads=1)
    flip_weight_bytes(graph)  # gave NaN outputs with exit 0 before
    with pytest.raises(ExportManifestError, match="sha256 .* differs from the manifest"):
        DeployedModel(graph, threads=1)
    with pytest.raises(ExportManifestError, match="sha256"):
        quantize_graph(graph, tmp_path / "again.int8.onnx", calib_frames=1)
    r = CliRunner().invoke(app, ["infer", str(graph), "--frames", "1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "sha256" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["quantize", str(graph), "-o", str(tmp_path / "q.onnx"), "--calib-frames", "1"])
    assert r.exit_code == 2 and "sha256" in r.output and "Traceback" not in r.output
    flip_weight_bytes(int8, 1)
    with pytest.raises(ExportManifestError, match="sha256"):
        DeployedModel(int8, threads=1)


def test_graph_takes_the_dead_camera_mask(model, exported):
    """Export carries camera_valid as a graph input: ORT with a dead camera matches eager with the same mask."""
    import torch

    from hydranet.deploy.export import example_inputs

    dm = DeployedModel(exported, threads=1)
    images, K, T = example_inputs(model, 1)
    valid = torch.ones(1, 8, dtype=torch.bool)
    valid[0, 0] = False
    arrays = (images.numpy(), K.numpy(), T.numpy())
    got, plain = dm.run_arrays(*arrays, valid.numpy()), dm.run_arrays(*arrays)
    with torch.no_grad():
        ref = model.eval()(images, K, T, camera_valid=valid)
    for spec in dm.manifest.outputs:
        assert abs(got[spec.name] - ref[spec.task][spec.key].numpy()).max() < 1e-3, spec.name
    assert not (got["objects3d.heatmap"] == plain["objects3d.heatmap"]).all()
