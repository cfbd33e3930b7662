"""Datasets to loaders: ``make_loader`` batches any map-style dataset of ``Sample``.

    from hydranet.datasets import open_dataset
    from hydranet.data.loaders import make_loader, set_epoch

    ds = open_dataset("runs/data")                  # shards, the synthetic world, ... (hydranet.datasets)
    loader = make_loader(ds, batch_size=8, shuffle=True, seed=0, num_workers=2)
    for epoch in range(epochs):
        set_epoch(loader, epoch)                     # new, reproducible order each epoch
        for batch in loader:                         # hydranet.data.sample.Batch
            ...

``make_loader`` collates with ``hydranet.data.sample.collate`` (dense labels stacked, ragged labels
as lists, ``batch.present`` masks for partial labels).

Order is a pure function of ``(seed, epoch)``: the same on every run and for any ``num_workers``.
When ``torch.distributed`` is initialised (torchrun), ``make_loader`` shards the data with
``DistributedSampler`` (each rank sees a disjoint ``1/world_size`` slice, padded to equal length);
pass ``sampler=`` to take full control (``shuffle`` is then ignored). Workers run one torch thread
each, since parallelism comes from the workers themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from hydranet.data.sample import collate


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled by ``(seed, epoch)`` when ``shuffle``; ``set_epoch`` like DistributedSampler."""

    def __init__(self, data: Sized, shuffle: bool = True, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = len(data), shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next shuffle, so every epoch's order differs yet is reproducible."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                sampler: Sampler | None = None, drop_last: bool = False, pin_memory: bool = False,
                prefetch_factor: int | None = None) -> DataLoader:
    """A ``DataLoader`` of ``Batch`` over a map-style dataset of ``Sample`` (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if sampler is None:
        if dist.is_available() and dist.is_initialized():
            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        else:
            sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs |= {"worker_init_fn": _worker_init, "persistent_workers": True}
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      drop_last=drop_last, pin_memory=pin_memory, **kwargs)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle for ``epoch`` (no-op for samplers without ``set_epoch``)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
