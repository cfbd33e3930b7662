"""Static INT8 quantization of an exported graph with ONNX Runtime (QDQ, per-channel weights).

    quantize_graph("model.onnx", "model.int8.onnx", calib_frames=32)

Calibration feeds held-out synthetic frames rendered for the manifest's rig (``CALIB_SEED``, never the
evaluation seed) through ``onnxruntime.quantization.quantize_static``; activation ranges come from
min/max over those frames. Only ``Conv`` nodes are quantized — the trunk, FPN, BEV encoder and heads,
i.e. nearly all of the FLOPs. The camera→BEV projection (matmuls of metres by K and T, a division by
depth) and ``GridSample`` stay fp32: 8-bit pixel coordinates would move a BEV sample by whole pixels.
The result gets its own manifest (``model.int8.manifest.json``) recording how it was made.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from hydranet.deploy.heldout import CALIB_SEED, spread_indices, world_for
from hydranet.deploy.manifest import (
    ExportManifest,
    QuantizationSpec,
    file_sha256,
    load_manifest,
    manifest_path,
    write_export_manifest,
)
from hydranet.deploy.runtime import check_graph_bytes

OP_TYPES = ["Conv"]


class QuantizeError(RuntimeError):
    """Quantization cannot proceed; the message names the graph."""


class WorldCalibrationReader:
    """``CalibrationDataReader`` over synthetic frames of the manifest's rig, one graph batch per call."""

    def __init__(self, manifest: ExportManifest, frames: int, seed: int = CALIB_SEED, on_frame=None):
        self.manifest = manifest
        self.world = world_for(manifest, seed, frames)
        self.indices = spread_indices(frames)
        self.on_frame = on_frame
        self._it = self._feeds()

    def _feeds(self) -> Iterator[dict]:
        import numpy as np

        b = self.manifest.batch
        for s in range(0, len(self.indices), b):
            idx = self.indices[s:s + b]
            samples = [self.world[i] for i in idx]
            samples += [samples[-1]] * (b - len(samples))  # the graph has a fixed batch: pad the last one
            if self.on_frame is not None:
                self.on_frame(len(idx))
            feeds = {"images": np.stack([x.images.numpy() for x in samples]),
                     "intrinsics": np.stack([x.intrinsics.float().numpy() for x in samples]),
                     "T_ego_from_cam": np.stack([x.T_ego_from_cam.float().numpy() for x in samples]),
                     "camera_valid": np.ones((b, len(samples[0].camera_names)), dtype=bool)}
            yield {name: feeds[name] for name in self.manifest.input_names()}  # only the inputs the graph has

    def get_next(self) -> dict | None:
        """The next feed ``{input name: array}`` (a full graph batch, the last padded by repetition); None
        when the frames are used up."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start again from the first frame."""
        self._it = self._feeds()


def int8_path(graph: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (beside the graph): the default output of ``quantize_graph``."""
    graph = Path(graph)
    return graph.with_name(f"{graph.stem}.int8.onnx")


def quantize_graph(graph: str | Path, out: str | Path | None = None, calib_frames: int = 32, per_channel: bool = True,
                   seed: int = CALIB_SEED, on_frame=None) -> ExportManifest:
    """Write an INT8 QDQ graph (default ``<stem>.int8.onnx``) and its manifest; returns the manifest.

    Raises ``QuantizeError`` for a missing graph, ``calib_frames < 1`` or an already quantized graph, and
    ``ExportManifestError`` for a missing manifest or a graph whose bytes differ from it."""
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
    out.parent.mkdir(parents=True, exist_ok=True)

    reader = WorldCalibrationReader(manifest, calib_frames, seed, on_frame)
    # quantize_static wants a CalibrationDataReader subclass: adapt ours (it is duck-typed already).
    Reader = type("Reader", (CalibrationDataReader,), {"get_next": lambda self: reader.get_next(),
                                                      "rewind": lambda self: reader.rewind()})
    with tempfile.TemporaryDirectory(prefix="hydranet-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + graph optimisation first (ORT's recommended pre-processing for quantization).
        quant_pre_process(str(graph), str(pre), skip_symbolic_shape=True)
        tmp_out = out.with_name(f".tmp-{out.name}")
        quantize_static(str(pre), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=OP_TYPES,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        tmp_out.replace(out)
    q = QuantizationSpec(method="onnxruntime static QDQ, MinMax calibration", calibration_frames=calib_frames,
                         calibration_seed=seed, per_channel=per_channel, op_types=list(OP_TYPES),
                         activation_type="uint8 (asymmetric)", weight_type="int8 (symmetric)",
                         source_graph=graph.name)
    int8 = manifest.model_copy(update={"graph": out.name, "graph_sha256": file_sha256(out), "quantization": q})
    write_export_manifest(int8, manifest_path(out))
    return int8
