"""Whether the model runs traced or exported, where only static shapes and no data-dependent Python may run."""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True under ``torch.jit.trace`` or ONNX export (``torch.onnx.export``): the caller takes its static-shape
    path and skips checks that read tensor values (eager only)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
