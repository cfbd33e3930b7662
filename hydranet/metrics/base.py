"""The ``Metric`` contract every task's metric implements (streaming, mergeable across DDP ranks).

A metric sees decoded predictions and targets in the label format of its task (see
``hydranet.tasks.base.Task.decode``/``targets``) and never the network's raw outputs, so the same
metric scores a PyTorch model and an exported ONNX graph. ``FrameMetric`` (``frame_records.py``) is the
implementation every built-in metric uses.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

# ``Metric.undefined_reason`` for a result that has nothing to be measured on: a suite check on it is
# "skipped", in ``hydranet eval``, ``hydranet gate`` and the report alike, never a failure of the model.
NO_GROUND_TRUTH = "no ground truth"


class Metric(ABC):
    """Streaming metric: bounded memory for dense tasks, mergeable across DDP ranks."""

    @abstractmethod
    def update(self, preds: list[Any], targets: list[Any]) -> None:
        """Per-sample decoded predictions and targets (label format); ``None`` targets are skipped."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Scalar results; the first key is the task's headline number."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every update (start of a new evaluation)."""

    def sync(self) -> None:  # noqa: B027 - optional hook; single-process metrics need nothing
        """All-reduce accumulated state across ranks (called before ``compute`` under DDP)."""

    def undefined_reason(self, key: str) -> str:
        """Why result ``key`` of ``compute()`` is NaN: ``NO_GROUND_TRUTH`` when the evaluated frames hold
        nothing it is measured on (e.g. ``recall/red`` without a red light: the check is skipped), else a
        short reason the *model's* result is undefined (a check on it fails). Only meaningful for NaN results."""
        return "undefined on these frames"

    def unscored(self, key: str) -> str | None:
        """Why result ``key`` is never scored, whatever the frames (e.g. the velocity of a class that never
        moves), or None: a suite threshold on such a key is refused when it is checked."""
        return None

    def undefined(self, results: dict[str, float]) -> dict[str, str]:
        """``{key: undefined_reason(key)}`` for every NaN in ``results`` (this metric's ``compute()``)."""
        return {k: self.undefined_reason(k) for k, v in results.items() if isinstance(v, float) and math.isnan(v)}
