"""Per-frame records: the common state of every hydranet metric.

Each metric reduces one frame (sample) to a small record — per-class pixel counts for dense tasks,
per-detection match flags and scores for detection — and keeps the list of records. That gives:

- bounded memory: a record is O(classes) numbers for dense tasks, never the prediction itself;
- exact streaming: ``compute`` over the records equals ``compute`` over one big update;
- frame bootstrap: ``compute_frames(idx)`` recomputes the metric on any multiset of frames, which
  is what the regression gate resamples for its confidence intervals;
- DDP: ``sync`` all-gathers the records of every rank (ordered by rank), so every rank computes
  the same numbers as one process that saw all frames.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hydranet.metrics.base import NO_GROUND_TRUTH, Metric


class FrameMetric(Metric):
    """A ``Metric`` whose state is one picklable record per evaluated frame."""

    # Results a subclass adds only on some frames (sequences: ``flicker``), absent from an empty evaluation.
    extra_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._records: list[Any] = []
        self._synced = False

    # -- the Metric contract -------------------------------------------------------------------
    def update(self, preds: list[Any], targets: list[Any]) -> None:
        """Append one record per sample whose target is not ``None``.

        Raises ``RuntimeError`` after ``sync()`` (call ``reset()`` first), and ``ValueError`` when ``preds``
        and ``targets`` differ in length or a sample has a target but no prediction."""
        if self._synced:
            raise RuntimeError(f"{type(self).__name__}.update() after sync(): call reset() before a new epoch")
        if len(preds) != len(targets):
            raise ValueError(f"{type(self).__name__}.update: {len(preds)} predictions for {len(targets)} targets")
        for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
            if target is None:  # label absent on this sample: it is not evaluated
                continue
            if pred is None:
                raise ValueError(f"{type(self).__name__}.update: sample {i} has a target but no prediction")
            with torch.no_grad():
                self._records.append(self.frame_record(pred, target, where=f"{type(self).__name__}: sample {i}"))

    def compute(self) -> dict[str, float]:
        """Results over every record: ``compute_frames(None)``."""
        return self.compute_frames(None)

    def metric_names(self) -> set[str]:
        """The names of the results this metric can give, each up to its first ``/`` (``recall`` for
        ``recall/red``: the part after it names a class, state or camera): an empty evaluation's keys and
        ``extra_names``. A suite is checked against them before a frame is rendered."""
        return {k.split("/")[0] for k in self.compute_frames([])} | set(self.extra_names)

    def reset(self) -> None:
        """Drop every record and the synced flag (start of a new evaluation)."""
        self._records = []
        self._synced = False

    def sync(self) -> None:
        """Gather every rank's records (rank order) so all ranks compute on all frames."""
        if self._synced or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._records)
        self._records = [r for part in gathered for r in part]
        self._synced = True

    # -- what each metric family implements -------------------------------------------------------
    @abstractmethod
    def frame_record(self, pred: Any, target: Any, where: str) -> Any:
        """Reduce one frame to its (small, numpy, picklable) record."""

    @abstractmethod
    def compute_frames(self, frames: Sequence[int] | np.ndarray | None,
                       keys: Collection[str] | None = None) -> dict[str, float]:
        """Results over the records ``frames`` (indices, repeats allowed; ``None`` = all).

        ``keys``: the caller needs only these results (a hint: metrics may skip work for others,
        e.g. per-camera AP inside a bootstrap loop); all keys are still allowed in the output."""

    def undefined_reason(self, key: str) -> str:
        """``NO_GROUND_TRUTH`` when no evaluated frame carried this task's label; families refine it per key."""
        return NO_GROUND_TRUTH if not self._records else super().undefined_reason(key)

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        """Frames recorded so far (after ``sync``: over all ranks)."""
        return len(self._records)

    def records(self, frames: Sequence[int] | np.ndarray | None) -> list[Any]:
        """The records of ``frames`` (indices, repeats allowed) in that order; ``None`` = all of them."""
        if frames is None:
            return self._records
        return [self._records[int(i)] for i in frames]


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Tensor/list/array -> numpy on the CPU (detached)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def require(d: Any, keys: Sequence[str], where: str) -> None:
    """Raise a ``ValueError`` naming ``where`` when the dict ``d`` lacks one of ``keys``."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict with keys {list(keys)}, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; got {sorted(d)}")


def safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """``num / den`` with NaN where ``den == 0`` (a class never seen has no score, not 0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def nanmean(x: Any) -> float:
    """Mean over finite entries; NaN when there are none (without numpy's warning)."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")
