"""Deployment: one ONNX graph for all cameras and the chosen heads, its manifest, parity checks, INT8, inference.

    hydranet export CKPT --tasks detection2d,drivable -o model.onnx --verify
    hydranet quantize model.onnx --calib-frames 32
    hydranet infer model.onnx --data synthetic --out infer/

See docs/deploy.md.
"""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "export": ["DEFAULT_OPSET", "ExportError", "ExportGraph", "export_checkpoint", "export_onnx"],
    "heldout": ["heldout_batches", "heldout_sequence_batches"],
    "infer": ["PREDICTIONS", "describe_outputs", "draw_and_record", "recorded_predictions", "run_infer", "write_frame"],
    "manifest": ["ExportManifest", "ExportManifestError", "load_manifest", "manifest_path"],
    "quantize": ["QuantizeError", "int8_path", "quantize_graph"],
    "runtime": ["DeployedModel", "bind_task"],
    "suites": ["suite_metrics"],
    "verify": ["PARITY_TOLERANCE", "judge_drop", "metric_drop", "parity"],
})
