"""Per-task datasets and the task scheduler that interleaves them.

Each task has an index list: the samples (of the concatenated training datasets) that carry its
label. Partial labels are the normal case, so the lists differ per task. A *micro-step* ``k``
samples one task ``t`` and takes the next ``global_batch`` indices of ``t``'s stream; rank ``r``
of ``W`` gets the ``r``-th slice. Hence:

- one process at batch ``B·W`` sees exactly the samples ``W`` processes see at ``B`` each, which is
  what makes DDP training equal single-process training at the same global batch;
- every rank picks the same task at the same micro-step (the choice is a pure function of
  ``(seed, k)``), so all ranks run the same sub-graph and the collectives line up.

Task choice per mode (``n_t`` = size of the task's index list):
- ``all``: no per-task streams; every micro-batch is drawn from all samples (labelled for any task).
- ``round_robin``: t = tasks[k mod T].
- ``proportional``: p_t ∝ n_t.
- ``temperature``: p_t ∝ n_t^(1/T) (T=1 proportional; large T approaches uniform).

Stream of task ``t``: an endless sequence of seeded permutations of its index list (epoch e uses
``seed ⊕ t ⊕ e``), so the ``j``-th draw is a pure function of ``j``. The scheduler state is just
``(micro_step, drawn[t])``; resuming continues the exact sequence without replaying anything.

Several rigs (``groups``): when the training datasets differ in camera count or image size, a batch
must come from one of them. ``groups[i]`` names the rig group of sample ``i``; every task stream is
then split per group into streams ``"<task>@<group>"`` (``"__all__@<group>"`` for kind ``all``), and
the scheduler interleaves those streams exactly as it interleaves tasks. ``task_of(stream)`` gives the
task back.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

ALL = "__all__"  # pseudo-task name of the stream over every sample


def stable_seed(*parts: Any) -> int:
    """A stable 63-bit seed from arbitrary parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _has_label(ds: Dataset, i: int, label: str) -> bool:
    """Whether sample ``i`` carries ``label``, from metadata when the source has it (no decoding)."""
    if isinstance(ds, Subset):
        return _has_label(ds.dataset, int(ds.indices[i]), label)
    if isinstance(ds, ConcatDataset):
        j = bisect.bisect_right(ds.cumulative_sizes, i)
        start = ds.cumulative_sizes[j - 1] if j else 0
        return _has_label(ds.datasets[j], i - start, label)
    if hasattr(ds, "label_present"):  # SyntheticWorld: deterministic drop pattern, no rendering
        return bool(ds.label_present(i, label))
    if hasattr(ds, "read_members"):  # ShardDataset: member names, no decoding
        return f"{label}.npz" in ds.read_members(i)[2]
    return label in ds[i].labels


def label_presence(dataset: Dataset, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Which samples carry each label: ``{label: bool[len(dataset)]}``, from metadata where the
    source has it (``label_presence``/``label_present``/shard member names); otherwise every
    sample is loaded once."""
    labels = list(labels)
    if hasattr(dataset, "label_presence"):
        got = dataset.label_presence(labels)
        return {k: np.asarray(got[k], dtype=bool) for k in labels}
    n = len(dataset)  # type: ignore[arg-type]
    return {k: np.fromiter((_has_label(dataset, i, k) for i in range(n)), dtype=bool, count=n) for k in labels}


class TaskScheduler:
    """Deterministic, resumable assignment of micro-steps to tasks and sample indices."""

    def __init__(self, index_lists: dict[str, np.ndarray], kind: str = "all", temperature: float = 2.0,
                 seed: int = 0, num_samples: int | None = None, groups: np.ndarray | None = None) -> None:
        if kind not in ("all", "round_robin", "proportional", "temperature"):
            raise ValueError(f"unknown scheduler kind '{kind}'")
        self.kind = kind
        self.seed = seed
        self.temperature = temperature
        if kind == "all":
            if num_samples is None:
                raise ValueError("scheduler 'all' needs num_samples")
            labelled = np.zeros(num_samples, dtype=bool)
            for idx in index_lists.values():
                labelled[idx] = True
            self.lists = {ALL: np.flatnonzero(labelled)}
        else:
            self.lists = {t: np.asarray(v, dtype=np.int64) for t, v in sorted(index_lists.items())}
        if groups is not None:  # one stream per (task, rig group): a batch never mixes rigs
            groups = np.asarray(groups)
            split: dict[str, np.ndarray] = {}
            for t, idx in self.lists.items():
                for g in sorted(set(groups[idx].tolist())):
                    split[f"{t}@{g}"] = idx[groups[idx] == g]
            self.lists = split
        empty = [t for t, v in self.lists.items() if len(v) == 0]
        if empty:
            raise ValueError(f"no training samples carry the label of task(s) {empty}: check data.tasks and "
                             "the datasets' drop_labels")
        self.tasks = list(self.lists)
        sizes = np.array([len(self.lists[t]) for t in self.tasks], dtype=np.float64)
        if kind == "proportional":
            self.probs = sizes / sizes.sum()
        elif kind == "temperature":
            w = sizes ** (1.0 / temperature)
            self.probs = w / w.sum()
        else:
            self.probs = np.full(len(self.tasks), 1.0 / len(self.tasks))
        self.micro_step = 0
        self.drawn = {t: 0 for t in self.tasks}
        self._perm_cache: dict[tuple[str, int], np.ndarray] = {}

    @staticmethod
    def task_of(stream: str) -> str:
        """The task of a stream name (``"depth@nuscenes"`` -> ``"depth"``)."""
        return stream.split("@", 1)[0]

    # -- pure functions of (seed, k) ----------------------------------------------------------

    def task_at(self, k: int) -> str:
        """The stream (task, or ``task@group``) of micro-step ``k``: cyclic for ``all``/``round_robin``, else
        drawn from ``frequencies`` with an RNG seeded by ``(seed, k)`` (identical on every rank)."""
        if self.kind in ("all", "round_robin"):
            return self.tasks[k % len(self.tasks)]
        u = np.random.default_rng(stable_seed(self.seed, "task", k)).random()
        return self.tasks[min(int(np.searchsorted(np.cumsum(self.probs), u, side="right")), len(self.tasks) - 1)]

    def _perm(self, task: str, epoch: int) -> np.ndarray:
        key = (task, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 64:
                self._perm_cache.clear()
            rng = np.random.default_rng(stable_seed(self.seed, "perm", task, epoch))
            self._perm_cache[key] = self.lists[task][rng.permutation(len(self.lists[task]))]
        return self._perm_cache[key]

    def _take(self, task: str, start: int, count: int) -> list[int]:
        n = len(self.lists[task])
        return [int(self._perm(task, j // n)[j % n]) for j in range(start, start + count)]

    # -- the stream ----------------------------------------------------------------------------

    def next(self, global_batch: int) -> tuple[str, list[int]]:
        """The task and the global batch of sample indices of the next micro-step."""
        task = self.task_at(self.micro_step)
        indices = self._take(task, self.drawn[task], global_batch)
        self.drawn[task] += global_batch
        self.micro_step += 1
        return task, indices

    def frequencies(self) -> dict[str, float]:
        """``{stream: probability}`` of being chosen at a micro-step (uniform for ``all``/``round_robin``)."""
        return dict(zip(self.tasks, self.probs.tolist(), strict=True))

    def copy(self) -> TaskScheduler:
        """An independent copy at the same position (index lists shared, read-only; permutation cache empty)."""
        new = copy.copy(self)
        new.drawn = dict(self.drawn)
        new._perm_cache = {}
        return new

    def state_dict(self) -> dict[str, Any]:
        """The position ``(micro_step, drawn)`` plus kind, seed and stream sizes to check on resume (JSON-ready)."""
        return {"kind": self.kind, "seed": self.seed, "micro_step": self.micro_step, "drawn": dict(self.drawn),
                "sizes": {t: len(v) for t, v in self.lists.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict``; raises ``ValueError`` when its kind, seed or stream sizes differ from
        this scheduler's (another config or other data)."""
        sizes = {t: len(v) for t, v in self.lists.items()}
        if state["kind"] != self.kind or state["seed"] != self.seed or state["sizes"] != sizes:
            raise ValueError(f"scheduler state does not match this run (saved kind={state['kind']} "
                             f"seed={state['seed']} sizes={state['sizes']}; now kind={self.kind} seed={self.seed} "
                             f"sizes={sizes}): "
                             "resume with the same config and data")
        self.micro_step = int(state["micro_step"])
        self.drawn = {t: int(v) for t, v in state["drawn"].items()}


class SchedulerBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Feeds a DataLoader this rank's slice of each micro-step's global batch.

    It iterates a *copy* of the scheduler, because the DataLoader prefetches ahead of training;
    the trainer advances its own scheduler as batches are consumed, so the checkpointed position
    is exactly the consumed one.
    """

    def __init__(self, scheduler: TaskScheduler, batch_size: int, rank: int, world_size: int,
                 total_micro_steps: int) -> None:
        self.base = scheduler.copy()
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.total = total_micro_steps

    def __len__(self) -> int:
        return max(0, self.total - self.base.micro_step)

    def __iter__(self) -> Iterator[list[int]]:
        sched = self.base.copy()
        b = self.batch_size
        while sched.micro_step < self.total:
            _, indices = sched.next(b * self.world_size)
            yield indices[self.rank * b:(self.rank + 1) * b]


def build_index_lists(presence: dict[str, np.ndarray], task_labels: dict[str, str],
                      allowed: dict[str, np.ndarray | None], max_samples: dict[str, int | None],
                      seed: int) -> dict[str, np.ndarray]:
    """Per-task index lists: samples carrying the task's label, within the task's datasets,
    optionally capped (a seeded subset, so the cap is the same on every rank and every run)."""
    out = {}
    for task, label in sorted(task_labels.items()):
        mask = presence[label].copy()
        if allowed.get(task) is not None:
            mask &= allowed[task]
        idx = np.flatnonzero(mask)
        cap = max_samples.get(task)
        if cap is not None and len(idx) > cap:
            rng = np.random.default_rng(stable_seed(seed, "cap", task))
            idx = np.sort(rng.choice(idx, size=cap, replace=False))
        out[task] = idx
    return out
