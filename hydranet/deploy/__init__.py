"""Deployment: one ONNX graph for all cameras and the chosen heads, its manifest, parity checks, INT8, inference.

    hydranet export CKPT --tasks detection2d,drivable -o model.onnx --verify
    hydranet quantize model.onnx --calib-frames 32
    hydranet infer model.onnx --data synthetic --out infer/

See docs/deploy.md.
"""

from hydranet.deploy.export import DEFAULT_OPSET, ExportError, ExportGraph, export_checkpoint, export_onnx
from hydranet.deploy.manifest import ExportManifest, ExportManifestError, load_manifest, manifest_path
from hydranet.deploy.runtime import DeployedModel, bind_task

__all__ = [
    "DEFAULT_OPSET", "DeployedModel", "ExportError", "ExportGraph", "ExportManifest", "ExportManifestError",
    "bind_task", "export_checkpoint", "export_onnx", "load_manifest", "manifest_path",
]
