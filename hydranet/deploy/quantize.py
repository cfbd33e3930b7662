"""Static INT8 quantization of an exported graph with ONNX Runtime (QDQ, per-channel weights).

    quantize_graph("model.onnx", "model.int8.onnx", calib_frames=32)

Calibration feeds held-out synthetic frames rendered for the manifest's rig (``CALIB_SEED``, never the
evaluation seed) through ``onnxruntime.quantization.quantize_static``; activation ranges come from
min/max over those frames. A streaming graph's frames are consecutive, each with the memory state the fp32
graph carried to it (``WorldCalibrationReader``). What is quantized follows ORT profiles of the demo model
(docs/deploy.md):

- ``Conv`` and ``Relu`` (``OP_TYPES``): the trunk, FPN, BEV encoder and head stems, i.e. nearly all of the
  FLOPs. ``Relu`` is listed so the quantizer folds it into the conv's output range: with ``Conv`` alone
  every conv->ReLU kept a DequantizeLinear->QuantizeLinear re-quantization in fp32 (half of the Q/DQ time).
- Left fp32 (``fp32_convs``, recorded in the manifest as ``fp32_nodes``): the image stem (3 input
  channels: the int8 kernel was slower than the fp32 one and the first layer is the most range-sensitive)
  and each output conv (no conv downstream: a few output channels, no int8 gain, and the regression
  outputs keep fp32 resolution).
- Squeeze-excite gating, ``Add``/``Resize``, the camera->BEV projection (matmuls of metres by K and T, a
  division by depth) and ``GridSample`` stay fp32: quantizing the elementwise ops too gave no measurable
  speed, and 8-bit pixel coordinates would move a BEV sample by whole pixels.
- Grouped convs with at most ``DENSE_INT8_MAX_GROUPS`` groups are rewritten as dense convs with
  block-diagonal weights before quantization (``densify_grouped_convs``; recorded in the manifest as
  ``dense_nodes``). The same arithmetic (the added weights are exact zeros, and a per-output-channel int8
  scale ignores them), but ORT runs a grouped ``QLinearConv`` as one small GEMM per group: the trunk's 8-wide
  groups left the int8 convs barely faster than fp32 (1 thread, 8 x 96 x 12 x 24, 3x3 conv + 1x1 conv: grouped
  int8 1.27 ms, dense int8 0.79 ms, grouped fp32 1.61 ms; at 24 channels 4.90 / 2.06 / 5.00 ms; at 192
  channels, 24 groups, dense int8 no longer wins: 0.67 against 0.65 ms).
- Nothing here handles normalisation: every BatchNorm follows a conv and the export (eval mode, constant
  folding) has already folded it into that conv's weights and bias, so the graph has no norm node and the
  per-channel int8 weights carry the BatchNorm scale.

The result gets its own manifest (``model.int8.manifest.json``) recording how it was made.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from hydranet.deploy.heldout import CALIB_SEED, heldout_sequence_batches, spread_indices, world_for
from hydranet.deploy.manifest import (
    ExportManifest,
    QuantizationSpec,
    check_graph_output,
    file_sha256,
    load_manifest,
    manifest_path,
    write_export_manifest,
)
from hydranet.deploy.runtime import DeployedModel, check_graph_bytes
from hydranet.eval import Streamer
from hydranet.outputs import atomic_path

OP_TYPES = ["Conv", "Relu"]
MIN_INT8_IN_CHANNELS = 4  # convs with fewer input channels per group (the RGB stem) stay fp32
DENSE_INT8_MAX_GROUPS = 16  # grouped convs with at most this many groups run dense in the int8 graph


class QuantizeError(RuntimeError):
    """Quantization cannot proceed; the message names the graph."""


class WorldCalibrationReader:
    """``CalibrationDataReader`` over synthetic frames of the manifest's rig, one graph batch per call.

    A single-frame graph reads ``frames`` frames spread over scenes. A temporal (streaming) graph reads ``frames``
    *consecutive* frames of ``manifest.batch`` scenes, each fed with the memory state its frame would have on the
    car: ``fp32`` (the graph's ``DeployedModel``, required then) is run frame after frame to carry the state, so
    the memory's activations are calibrated on the ranges a stream reaches, not on the empty reset state."""

    def __init__(self, manifest: ExportManifest, frames: int, seed: int = CALIB_SEED, on_frame=None,
                 fp32: DeployedModel | None = None):
        self.manifest = manifest
        self.temporal = manifest.is_temporal
        if self.temporal and fp32 is None:
            raise QuantizeError("a temporal graph's calibration needs its fp32 DeployedModel to carry the memory")
        self.frames, self.seed, self.fp32 = frames, seed, fp32
        self.on_frame = on_frame
        self._it = self._feeds()

    def _feeds(self) -> Iterator[dict]:
        return self._stream() if self.temporal else self._frames()

    def _frames(self) -> Iterator[dict]:
        import numpy as np

        b = self.manifest.batch
        world, indices = world_for(self.manifest, self.seed, self.frames), spread_indices(self.frames)
        for s in range(0, len(indices), b):
            idx = indices[s:s + b]
            samples = [world[i] for i in idx]
            samples += [samples[-1]] * (b - len(samples))  # the graph has a fixed batch: pad the last one
            if self.on_frame is not None:
                self.on_frame(len(idx))
            feeds = {"images": np.stack([x.images.numpy() for x in samples]),
                     "intrinsics": np.stack([x.intrinsics.float().numpy() for x in samples]),
                     "T_ego_from_cam": np.stack([x.T_ego_from_cam.float().numpy() for x in samples]),
                     "camera_valid": np.ones((b, len(samples[0].camera_names)), dtype=bool)}
            yield {name: feeds[name] for name in self.manifest.input_names()}  # only the inputs the graph has

    def _stream(self) -> Iterator[dict]:
        import numpy as np

        assert self.fp32 is not None
        # The fp32 graph streamed as evaluation streams it (hydranet.eval.Streamer): each feed carries the memory
        # state the frames before it left.
        streamer = Streamer(self.fp32)
        for batch in heldout_sequence_batches(self.manifest, self.frames, self.seed):
            if self.on_frame is not None:
                self.on_frame(1)
            state = streamer.state if streamer.state is not None else self.fp32.init_state(self.manifest.batch)
            feeds = {"images": batch.images.numpy(), "intrinsics": batch.intrinsics.float().numpy(),
                     "T_ego_from_cam": batch.T_ego_from_cam.float().numpy(),
                     "camera_valid": np.ones(batch.images.shape[:2], dtype=bool),
                     "T_world_from_ego": batch.T_world_from_ego.float().numpy(),
                     "timestamp": batch.timestamp.float().numpy(), **state}
            yield {name: feeds[name] for name in self.manifest.input_names()}
            streamer(batch, list(self.manifest.tasks))

    def get_next(self) -> dict | None:
        """The next feed ``{input name: array}`` (a full graph batch, the last padded by repetition); None
        when the frames are used up."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start again from the first frame."""
        self._it = self._feeds()


def fp32_convs(graph) -> list[str]:
    """Names of the ``Conv`` nodes of ``graph`` (an ``onnx.ModelProto``) to leave fp32: the image stem (fewer
    than ``MIN_INT8_IN_CHANNELS`` input channels per group, read from the weight initializer) and every
    output conv (no ``Conv`` downstream of it). Convs whose weight is not an initializer are not listed."""
    nodes = list(graph.graph.node)
    weights = {i.name: list(i.dims) for i in graph.graph.initializer}
    consumers: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    feeds_conv: dict[str, bool] = {}  # node name -> a Conv is reachable from its outputs

    def reaches_conv(node) -> bool:
        if node.name not in feeds_conv:
            feeds_conv[node.name] = False  # a DAG, but guard anyway
            feeds_conv[node.name] = any(c.op_type == "Conv" or reaches_conv(c)
                                        for out in node.output for c in consumers.get(out, []))
        return feeds_conv[node.name]

    keep = []
    for n in nodes:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in weights:
            continue
        if weights[n.input[1]][1] < MIN_INT8_IN_CHANNELS or not reaches_conv(n):
            keep.append(n.name)
    return keep


def densify_grouped_convs(graph, max_groups: int = DENSE_INT8_MAX_GROUPS, skip: Iterable[str] = ()) -> list[str]:
    """Rewrite, in place, every ``Conv`` of ``graph`` (an ``onnx.ModelProto``) with 2..``max_groups`` groups
    and an initializer weight as a dense conv (``group`` 1) whose weight ``[C_out, C_in, kh, kw]`` is
    block-diagonal: the same outputs, since every added weight is 0. Nodes named in ``skip`` are left
    as they are. Returns the names of the rewritten nodes.

    Raises ``QuantizeError`` for a weight shared with another node (rewriting it would change that node)."""
    import numpy as np
    from onnx import numpy_helper

    skip = set(skip)
    inits = {i.name: i for i in graph.graph.initializer}
    uses: dict[str, int] = {}
    for n in graph.graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten = []
    for n in graph.graph.node:
        if n.op_type != "Conv" or n.name in skip or len(n.input) < 2 or n.input[1] not in inits:
            continue
        group = next((a for a in n.attribute if a.name == "group"), None)
        if group is None or not 1 < group.i <= max_groups:
            continue
        if uses[n.input[1]] > 1:
            raise QuantizeError(f"Conv {n.name}: its weight {n.input[1]} is shared with another node")
        w = numpy_helper.to_array(inits[n.input[1]])
        g = group.i
        out_per, in_per = w.shape[0] // g, w.shape[1]
        dense = np.zeros((w.shape[0], in_per * g, *w.shape[2:]), dtype=w.dtype)
        for k in range(g):
            dense[k * out_per:(k + 1) * out_per, k * in_per:(k + 1) * in_per] = w[k * out_per:(k + 1) * out_per]
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(dense, n.input[1]))
        group.i = 1
        rewritten.append(n.name)
    return rewritten


def int8_path(graph: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (beside the graph): the default output of ``quantize_graph``."""
    graph = Path(graph)
    return graph.with_name(f"{graph.stem}.int8.onnx")


def quantize_graph(graph: str | Path, out: str | Path | None = None, calib_frames: int = 32, per_channel: bool = True,
                   seed: int = CALIB_SEED, on_frame=None) -> ExportManifest:
    """Write an INT8 QDQ graph (default ``<stem>.int8.onnx``) and its manifest; returns the manifest.

    Raises ``QuantizeError`` for a missing graph, ``calib_frames < 1`` or an already quantized graph, and
    ``ExportManifestError`` for a missing manifest or a graph whose bytes differ from it."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    graph = Path(graph)
    if not graph.is_file():
        raise QuantizeError(f"{graph}: ONNX graph not found")
    if calib_frames < 1:
        raise QuantizeError(f"--calib-frames must be >= 1, got {calib_frames}")
    manifest = load_manifest(manifest_path(graph))
    check_graph_bytes(graph, manifest)
    if manifest.quantization is not None:
        raise QuantizeError(f"{graph}: already quantized ({manifest.quantization.method}); quantize the fp32 graph")
    out = Path(out) if out is not None else int8_path(graph)
    check_graph_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    # A streaming graph's memory is calibrated on the states a stream reaches: the fp32 graph carries them.
    fp32 = DeployedModel(graph, threads=1) if manifest.is_temporal else None
    reader = WorldCalibrationReader(manifest, calib_frames, seed, on_frame, fp32)
    # quantize_static wants a CalibrationDataReader subclass: adapt ours (it is duck-typed already).
    Reader = type("Reader", (CalibrationDataReader,), {"get_next": lambda self: reader.get_next(),
                                                      "rewind": lambda self: reader.rewind()})
    with tempfile.TemporaryDirectory(prefix="hydranet-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + graph optimisation first (ORT's recommended pre-processing for quantization).
        quant_pre_process(str(graph), str(pre), skip_symbolic_shape=True)
        pre_graph = onnx.load(str(pre))
        keep_fp32 = fp32_convs(pre_graph)
        dense = densify_grouped_convs(pre_graph, skip=keep_fp32)
        if dense:
            onnx.save(pre_graph, str(pre))
        with atomic_path(out) as tmp_out:  # no half-written graph, even on a full disk
            quantize_static(str(pre), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=OP_TYPES, nodes_to_exclude=keep_fp32, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    q = QuantizationSpec(method="onnxruntime static QDQ, MinMax calibration", calibration_frames=calib_frames,
                         calibration_seed=seed, per_channel=per_channel, op_types=list(OP_TYPES),
                         activation_type="uint8 (asymmetric)", weight_type="int8 (symmetric)",
                         source_graph=graph.name, fp32_nodes=keep_fp32, dense_nodes=dense)
    int8 = manifest.model_copy(update={"graph": out.name, "graph_sha256": file_sha256(out), "quantization": q})
    write_export_manifest(int8, manifest_path(out))
    return int8
