"""INT8: QDQ graph with per-channel conv weights, fp32 geometry, its own manifest, and a measured metric drop."""

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.deploy import DeployedModel, load_manifest
from hydranet.deploy.heldout import heldout_batches
from hydranet.deploy.quantize import DENSE_INT8_MAX_GROUPS, QuantizeError, densify_grouped_convs, quantize_graph
from hydranet.deploy.verify import metric_drop
from hydranet.eval.loop import evaluate
from hydranet.tasks import create_task


@pytest.fixture(scope="module")
def int8(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    quantize_graph(exported, out, calib_frames=2)
    return out


def test_int8_graph_structure(exported, int8):
    m = load_manifest(int8)
    assert m.graph == "model.int8.onnx" and m.quantization is not None
    assert m.quantization.calibration_frames == 2 and m.quantization.per_channel
    assert m.outputs == load_manifest(exported).outputs  # same interface as the fp32 graph
    g = onnx.load(str(int8))
    ops = [n.op_type for n in g.graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 20
    # Every quantized conv weight is int8 and per-channel (one scale per output channel); the convs left
    # fp32 are exactly the image stem (3 input channels) and the output convs, with float weights.
    init = {i.name: i for i in g.graph.initializer}
    producers = {o: n for n in g.graph.node for o in n.output}
    convs = [n for n in g.graph.node if n.op_type == "Conv"]
    kept = set(m.quantization.fp32_nodes)
    assert kept and kept < {c.name for c in convs}
    consumers: dict[str, list] = {}
    for n in g.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.graph.output}

    def reaches_output_without_conv(tensor: str) -> bool:
        return tensor in graph_outputs or any(
            c.op_type != "Conv" and any(reaches_output_without_conv(o) for o in c.output)
            for c in consumers.get(tensor, []))

    for conv in convs:
        if conv.name in kept:
            w = init[conv.input[1]]
            assert w.data_type == onnx.TensorProto.FLOAT
            assert w.dims[1] == 3 or reaches_output_without_conv(conv.output[0]), conv.name
            continue
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        assert init[dq.input[0]].data_type == onnx.TensorProto.INT8
        assert len(onnx.numpy_helper.to_array(init[dq.input[1]]).reshape(-1)) == init[dq.input[0]].dims[0]
    assert sum(init[c.input[1]].dims[1] == 3 for c in convs if c.name in kept) == 1  # the stem
    # The trunk's grouped convs run dense in the int8 graph: none with 2..DENSE_INT8_MAX_GROUPS groups is left.
    groups = {c.name: next((a.i for a in c.attribute if a.name == "group"), 1) for c in convs}
    assert m.quantization.dense_nodes and all(groups[n] == 1 for n in m.quantization.dense_nodes)
    assert not [n for n, k in groups.items() if 1 < k <= DENSE_INT8_MAX_GROUPS]
    # The camera->BEV geometry stays fp32: GridSample's sampling grid is not dequantized int8.
    for gs in (n for n in g.graph.node if n.op_type == "GridSample"):
        assert producers[gs.input[1]].op_type != "DequantizeLinear"


def _conv_graph(tmp_path, groups: int, channels: int = 32):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 3, padding=1, groups=groups), torch.nn.ReLU()).eval()
    x = torch.randn(2, channels, 6, 10)
    path = tmp_path / f"g{groups}.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["x"], dynamo=False)
    return onnx.load(str(path)), x.numpy()


def _run(graph, x):
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_densify_grouped_convs_keeps_the_arithmetic(tmp_path):
    graph, x = _conv_graph(tmp_path, groups=4)
    before = _run(graph, x)
    conv = next(n for n in graph.graph.node if n.op_type == "Conv")
    assert densify_grouped_convs(graph) == [conv.name]
    assert next(a.i for a in conv.attribute if a.name == "group") == 1
    w = onnx.numpy_helper.to_array(next(i for i in graph.graph.initializer if i.name == conv.input[1]))
    assert w.shape == (32, 32, 3, 3) and not w[:8, 8:].any() and w[:8, :8].any()  # block-diagonal
    np.testing.assert_allclose(_run(graph, x), before, rtol=1e-5, atol=1e-5)
    # Too many groups (the dense conv would cost more than it saves), or a node asked to be skipped: unchanged.
    many, _ = _conv_graph(tmp_path, groups=DENSE_INT8_MAX_GROUPS * 2, channels=DENSE_INT8_MAX_GROUPS * 2)
    assert densify_grouped_convs(many) == []
    again, _ = _conv_graph(tmp_path, groups=4)
    assert densify_grouped_convs(again, skip=[n.name for n in again.graph.node]) == []


def test_densify_refuses_a_shared_weight(tmp_path):
    graph, _ = _conv_graph(tmp_path, groups=4)
    conv = next(n for n in graph.graph.node if n.op_type == "Conv")
    twin = onnx.helper.make_node("Conv", [conv.output[0], conv.input[1]], ["twin"], name="twin", group=4, pads=[1] * 4)
    graph.graph.node.append(twin)
    with pytest.raises(QuantizeError, match="shared"):
        densify_grouped_convs(graph)


def test_int8_kernels_after_ort_optimisation(exported, int8, tmp_path):
    """What ONNX Runtime runs: every quantized conv becomes a QLinearConv with its ReLU folded in (no
    DequantizeLinear -> QuantizeLinear re-quantization left anywhere), GridSample stays an fp32 op."""
    so = ort.SessionOptions()
    # EXTENDED: the QDQ -> QLinear fusions, without the hardware-specific NCHWc/NHWC layout rewrites.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(int8), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "optimised.onnx"))
    fp32 = onnx.load(str(exported))
    ops, fp32_ops = [n.op_type for n in opt.graph.node], [n.op_type for n in fp32.graph.node]
    kept = load_manifest(int8).quantization.fp32_nodes
    assert ops.count("Conv") == len(kept) and ops.count("QLinearConv") == fp32_ops.count("Conv") - len(kept)
    producers = {o: n for n in opt.graph.node for o in n.output}
    requant = [n.name for n in opt.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producers
               and producers[n.input[0]].op_type == "DequantizeLinear"]
    assert requant == []
    # No normalisation op reaches either graph (the export folds every BatchNorm into its conv), and the BEV
    # sampling keeps its fp32 ops, all of them.
    norms = {"BatchNormalization", "InstanceNormalization", "GroupNormalization", "LayerNormalization"}
    assert not norms & (set(ops) | set(fp32_ops)), norms & (set(ops) | set(fp32_ops))
    assert ops.count("GridSample") == fp32_ops.count("GridSample") > 0
    assert not any(op.startswith("QLinear") and op not in ("QLinearConv", "QLinearAdd") for op in ops), set(ops)


def test_int8_outputs_close_to_fp32(exported, int8):
    fp32, q = DeployedModel(exported, threads=1), DeployedModel(int8, threads=1)
    batch = next(heldout_batches(fp32.manifest, 1, 1))
    (a, _), (b, _) = fp32.run(batch), q.run(batch)
    for task, outs in a.items():
        for key, x in outs.items():
            err = float((x - b[task][key]).abs().max())
            spread = float(x.max() - x.min()) + 1e-6
            assert err < 0.5 * spread + 0.05, f"{task}.{key}: INT8 error {err} vs range {spread}"
            assert not np.array_equal(x.numpy(), b[task][key].numpy())  # really a different (quantized) graph


def test_metric_drop_through_task_metrics(exported, int8):
    fp32, q = DeployedModel(exported, threads=1), DeployedModel(int8, threads=1)
    frames = list(heldout_batches(fp32.manifest, 2, 1))
    base = evaluate(fp32, frames)
    cand = evaluate(q, frames)
    rows = metric_drop(base, cand, fp32.tasks)
    assert set(rows) == set(fp32.tasks)
    assert rows["depth"]["metric"] == "abs_rel" and not rows["depth"]["higher_is_better"]
    assert rows["drivable"]["metric"] == "miou" and 0.0 <= rows["drivable"]["base"] <= 1.0
    for r in rows.values():
        if not math.isnan(r["drop"]):
            assert abs(r["drop"]) < 0.25


def test_metric_drop_sign():
    tasks = {"drivable": create_task("drivable"), "depth": create_task("depth")}
    base = {"drivable": {"miou": 0.60}, "depth": {"abs_rel": 0.20}}
    cand = {"drivable": {"miou": 0.55}, "depth": {"abs_rel": 0.26}}
    rows = metric_drop(base, cand, tasks)
    assert rows["drivable"]["drop"] == pytest.approx(0.05) and rows["depth"]["drop"] == pytest.approx(0.06)


def test_quantize_errors(int8, tmp_path):
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_graph(int8, tmp_path / "twice.onnx", calib_frames=1)
    with pytest.raises(QuantizeError, match="not found"):
        quantize_graph(tmp_path / "nope.onnx", calib_frames=1)


SUITE = """
description: one tiny scenario
world: {num_scenes: 2, frames_per_scene: 2, lighting: day, fog: 0.0}
scenarios:
  straight: {layout: straight}
seeds: [300, 301]
frames: 1
tasks:
  drivable:
    thresholds: {miou: ">= 0.0"}
  depth: {}
  detection2d: {}
"""


def test_cli_quantize_reports_drop(exported, tmp_path):
    graph = tmp_path / "m.onnx"
    graph.write_bytes(exported.read_bytes())
    manifest = json.loads(exported.with_name("model.manifest.json").read_text()) | {"graph": "m.onnx"}
    (tmp_path / "m.manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "tiny.yaml").write_text(SUITE)
    r = CliRunner().invoke(app, ["quantize", str(graph), "--calib-frames", "1", "--eval-frames", "1", "--threads",
                                 "1", "--max-drop", "1.0", "--suite", str(tmp_path / "tiny.yaml"), "--json",
                                 str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.int8.onnx").is_file() and (tmp_path / "m.int8.manifest.json").is_file()
    data = json.loads((tmp_path / "q.json").read_text())
    assert data["calib_frames"] == 1
    assert set(data["comparisons"]["heldout"]["drop"]) == set(manifest["tasks"])
    suite = data["comparisons"]["suite:tiny"]
    assert set(suite["drop"]) == {"drivable", "depth", "detection2d"}
    assert set(suite["metrics"]) == {"fp32", "int8"} and "miou" in suite["metrics"]["int8"]["drivable"]
    assert "abs_rel" in r.output and "miou" in r.output and "suite 'tiny'" in r.output
    assert "m.int8.manifest.json" in " ".join(r.output.split()) and "grouped convs run dense" in r.output
    # A drop limit that is not a finite number >= 0 is bad input (exit 2), refused before calibration: with nan
    # every task showed "ok" (nan compares False with every drop) and the command passed.
    for bad in ("-1.0", "nan", "inf"):
        r = CliRunner().invoke(app, ["quantize", str(graph), "-o", str(tmp_path / "again.onnx"), "--calib-frames",
                                     "1", "--eval-frames", "1", "--threads", "1", "--max-drop", bad])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and "--max-drop" in lines[0], r.output
        assert "finite number >= 0" in lines[0] and not (tmp_path / "again.onnx").exists()


def test_int8_undefined_where_fp32_measured_fails():
    """A NaN INT8 headline beside a measured fp32 one showed "n/a" and passed; docs/eval.md: a candidate undefined
    where the baseline was measured fails."""
    from hydranet.deploy.verify import judge_drop

    nan = float("nan")
    tasks = {"drivable": create_task("drivable"), "depth": create_task("depth"), "lanes": create_task("lanes"),
             "detection2d": create_task("detection2d")}
    base = {"drivable": {"miou": 0.60}, "depth": {"abs_rel": 0.20}, "lanes": {"f1": nan}, "detection2d": {"map": nan}}
    cand = {"drivable": {"miou": nan}, "depth": {"abs_rel": 0.21}, "lanes": {"f1": nan}, "detection2d": {"map": 0.3}}
    rows = metric_drop(base, cand, tasks)
    status = {t: judge_drop(r, 0.02) for t, r in rows.items()}
    assert status["drivable"] == ("fail", "INT8 miou is undefined where fp32 measured 0.6000")
    assert status["depth"] == ("ok", "")  # finite values: the tolerance as before
    # AbsRel is lower-is-better: its drop in quality is a rise (before: "abs_rel dropped by 0.0100", the opposite
    # of what the numbers did); a higher-is-better metric's is a drop.
    assert judge_drop(rows["depth"], 0.005) == ("fail", "abs_rel rose by 0.0100 > 0.005")
    worse = metric_drop({"drivable": {"miou": 0.60}}, {"drivable": {"miou": 0.55}}, {"drivable": tasks["drivable"]})
    assert judge_drop(worse["drivable"], 0.02) == ("fail", "miou dropped by 0.0500 > 0.02")
    assert status["lanes"][0] == "n/a" and status["detection2d"][0] == "n/a"  # nothing measured in fp32


def test_cli_quantize_fails_an_undefined_int8_metric_naming_the_task(exported, tmp_path, monkeypatch):
    import hydranet.cli.deploy as cli

    def undefined_drivable(base, cand, tasks):
        rows = metric_drop(base, cand, tasks)
        rows["drivable"].update(candidate=float("nan"), drop=float("nan"), base=0.5)
        return rows

    monkeypatch.setattr(cli, "metric_drop", undefined_drivable)
    r = CliRunner().invoke(app, ["quantize", str(exported), "-o", str(tmp_path / "u.onnx"), "--calib-frames", "1",
                                 "--eval-frames", "1", "--threads", "1", "--max-drop", "10", "--json",
                                 str(tmp_path / "u.json")])
    assert r.exit_code == 1, r.output
    assert "drivable: INT8 miou is undefined where fp32 measured 0.5000" in " ".join(r.output.split())
    rows = json.loads((tmp_path / "u.json").read_text())["comparisons"]["heldout"]["drop"]
    assert rows["drivable"]["status"] == "fail" and rows["depth"]["status"] in ("ok", "n/a")


def test_the_drop_table_prints_no_negative_zero():
    """A drop that rounds to zero reads 0.0000, not -0.0000 (a new-user trial); other values keep their sign."""
    from hydranet.cli.deploy import _fmt

    assert (_fmt(-1e-6), _fmt(-0.01), _fmt(float("nan")), _fmt(None)) == ("0.0000", "-0.0100", "—", "—")
