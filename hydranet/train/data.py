"""Build the training and evaluation datasets a config's ``data`` section describes.

The training set is the concatenation of ``data.datasets`` (in name order); each task's index
list is the samples of *its* datasets (``data.tasks.<task>.datasets``, default all) that carry its
label, optionally capped by ``max_samples``. Label presence comes from metadata where the source
has it (the synthetic world's deterministic drop pattern, the shard members' names), so no image is
decoded to build the lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from hydranet.data.sample import Sample
from hydranet.datasets import open_source as open_registered
from hydranet.train.config import DataConfig, DatasetConfig
from hydranet.train.scheduler import build_index_lists, label_presence


def open_source(ds: DatasetConfig, labels: list[str] | None = None, where: str = "data") -> Dataset:
    """One configured source as a map-style dataset of ``Sample`` (limited to ``frames``).
    ``labels``: the labels training reads (shards then decode only those)."""

    config = ds.options()
    if ds.kind == "shards" and labels is not None and "labels" not in config:
        config["labels"] = labels
    data: Dataset = open_registered(config, where)
    if ds.frames is not None and ds.frames < len(data):  # type: ignore[arg-type]
        data = Subset(data, range(ds.frames))
    return data


@dataclass
class TrainData:
    """What ``build_train_data`` returns: the training set (sources concatenated in name order), each task's
    sample indices into it (int64), the eval set (or None), samples per source, and the rig groups."""

    dataset: Dataset
    index_lists: dict[str, np.ndarray]
    eval_dataset: Dataset | None
    sizes: dict[str, int]  # dataset name -> samples
    # Rig group (dataset name) of every sample when the datasets' rigs differ (None: one rig, batches
    # may mix datasets); ``rigs`` describes each dataset's rig: cameras x H x W.
    groups: np.ndarray | None = None
    rigs: dict[str, str] | None = None


def build_train_data(cfg: DataConfig, task_labels: dict[str, str], seed: int = 0) -> TrainData:
    """``task_labels``: task name -> the Sample label it learns from."""
    for task in cfg.tasks:
        if task not in task_labels:
            raise ValueError(f"data.tasks.{task}: not a task of this model (tasks: {sorted(task_labels)})")
    labels = sorted(set(task_labels.values()))
    names = sorted(cfg.datasets)
    parts = [open_source(cfg.datasets[n], labels, f"data.datasets.{n}") for n in names]
    sizes = {n: len(p) for n, p in zip(names, parts, strict=True)}  # type: ignore[arg-type]
    full = ConcatDataset(parts)
    pres = label_presence(full, labels)
    offsets = np.cumsum([0, *sizes.values()])
    allowed: dict[str, np.ndarray | None] = {}
    for task in task_labels:
        chosen = cfg.tasks[task].datasets if task in cfg.tasks else None
        if chosen is None:
            allowed[task] = None
            continue
        mask = np.zeros(len(full), dtype=bool)
        for n in chosen:
            k = names.index(n)
            mask[offsets[k]:offsets[k + 1]] = True
        allowed[task] = mask
    caps = {t: tc.max_samples for t, tc in cfg.tasks.items()}
    index_lists = build_index_lists(pres, task_labels, allowed, caps, seed)
    empty = sorted(t for t, v in index_lists.items() if len(v) == 0)
    if empty:
        raise ValueError(f"no training samples carry the labels of task(s) {empty} (datasets: {sizes}); "
                         "check data.datasets, data.tasks and the world's drop_labels")
    eval_ds = open_source(cfg.eval, labels, "data.eval") if cfg.eval is not None else None
    rigs = {n: rig_of(p) for n, p in zip(names, parts, strict=True)}
    groups = None
    if len(set(rigs.values())) > 1:
        groups = np.concatenate([np.full(sizes[n], n, dtype=object) for n in names])
    return TrainData(full if len(parts) > 1 else parts[0], index_lists, eval_ds, sizes, groups,
                     {n: f"{r[0]} cameras {r[1]}x{r[2]}" for n, r in rigs.items()})


class InMemoryDataset(Dataset):
    """Every sample of ``dataset`` decoded once and held in RAM (``train.in_memory``); ``__getitem__`` returns
    the stored ``Sample`` (its tensors are shared, never modified by training: collate stacks copies)."""

    def __init__(self, dataset: Dataset, progress: Callable[[int, int], None] | None = None) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        self.samples = []
        for i in range(n):
            self.samples.append(dataset[i])
            if progress is not None:
                progress(i + 1, n)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


def rig_of(ds: Dataset) -> tuple[int, int, int]:
    """(cameras, H, W) of a dataset, from its first sample (samples of one source share a rig)."""
    images = ds[0].images
    return int(images.shape[0]), int(images.shape[-2]), int(images.shape[-1])
