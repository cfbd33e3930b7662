"""Datasets to loaders: ``open_dataset`` (shards or the synthetic world) and ``make_loader``.

    from hydranet.data.loaders import open_dataset, make_loader, set_epoch

    ds = open_dataset("runs/data")                  # a shard directory (or its manifest.json)
    ds = open_dataset("synthetic")                  # SyntheticWorld(WorldConfig())
    ds = open_dataset("synthetic", world={"seed": 3, "num_scenes": 10})  # or a WorldConfig / YAML path
    ds = open_dataset("configs/world_small.yaml")   # a YAML WorldConfig -> SyntheticWorld

    loader = make_loader(ds, batch_size=8, shuffle=True, seed=0, num_workers=2)
    for epoch in range(epochs):
        set_epoch(loader, epoch)                     # new, reproducible order each epoch
        for batch in loader:                         # hydranet.data.sample.Batch
            ...

Both dataset kinds are map-style and yield ``Sample``; ``make_loader`` collates with
``hydranet.data.sample.collate`` (dense labels stacked, ragged labels as lists, ``batch.present``
masks for partial labels).

Order is a pure function of ``(seed, epoch)``: the same on every run and for any ``num_workers``.
When ``torch.distributed`` is initialised (torchrun), ``make_loader`` shards the data with
``DistributedSampler`` (each rank sees a disjoint ``1/world_size`` slice, padded to equal length);
pass ``sampler=`` to take full control (``shuffle`` is then ignored). Workers run one torch thread
each, since parallelism comes from the workers themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from hydranet.data.manifest import MANIFEST_NAME, ManifestError
from hydranet.data.sample import collate
from hydranet.data.shards import ShardDataset
from hydranet.data.storage import is_url


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled by ``(seed, epoch)`` when ``shuffle``; ``set_epoch`` like DistributedSampler."""

    def __init__(self, data: Sized, shuffle: bool = True, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = len(data), shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
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


def open_dataset(spec: str | os.PathLike | Any, world: Any = None, labels: list[str] | None = None) -> Dataset:
    """A map-style dataset of ``Sample`` from a spec every command can take as ``--data``:

    - a source config mapping ``{"kind": "nuscenes", "dataroot": ..., ...}`` (any registered kind,
      see ``hydranet.data.sources``; ``frames`` keeps the first N samples) -> that source
    - ``"KIND:PATH"`` for a registered kind, e.g. ``"nuscenes:/data/nuscenes"`` -> that source with
      its path option set (``--version`` etc. take their defaults)
    - a ``.yaml`` file whose top level has ``kind:`` -> that source config

    - a shard directory, or its ``manifest.json``          -> ``ShardDataset`` (``labels`` limits decoding)
    - an fsspec URL of one (``s3://``, ``gs://``, ``https://``, ``file://``) -> ``ShardDataset`` streaming it
    - ``"synthetic"``                                       -> ``SyntheticWorld(world)``; ``world`` is a
      ``WorldConfig``, a dict of its fields, a YAML path, or None for the defaults
    - ``"synthetic:<world.yaml>"`` or a ``.yaml``/``.yml`` path -> ``SyntheticWorld`` from that file
    - a ``WorldConfig``                                     -> ``SyntheticWorld`` of it
    """
    from hydranet.data.sources import parse_source_spec

    if isinstance(spec, dict):
        return _open_config(spec)
    if isinstance(spec, str) and not spec.startswith("synthetic") and (config := parse_source_spec(spec)):
        return _open_config(config)
    if isinstance(spec, str | os.PathLike) and Path(spec).suffix in (".yaml", ".yml") and Path(spec).is_file():
        import yaml

        try:
            tree = yaml.safe_load(Path(spec).read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{spec}: not valid YAML ({e})") from e
        if isinstance(tree, dict) and "kind" in tree:
            return _open_config(tree, str(spec))
    if not isinstance(spec, str | os.PathLike):  # a WorldConfig (imported lazily: shards don't need the world)
        from hydranet.world import SyntheticWorld

        return SyntheticWorld(load_world_config(spec))
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:") or Path(text).suffix in (".yaml", ".yml"):
        from hydranet.world import SyntheticWorld

        named = text == "synthetic" or text.startswith("synthetic:")
        source = (text.partition(":")[2] or world) if named else text
        return SyntheticWorld(load_world_config(source))
    if is_url(text) or text.startswith("file://"):  # shards behind a URL: streamed by byte range (storage.py)
        return ShardDataset(text, labels=labels)
    path = Path(text)
    if path.is_dir() or path.name == MANIFEST_NAME:
        return ShardDataset(path, labels=labels)
    if not path.exists():
        raise ManifestError(f"no such dataset: expected a shard directory, a manifest.json, 'synthetic', "
                            f"'synthetic:<world.yaml>' or a world .yaml (got {text!r})", path)
    raise ManifestError("not a dataset: expected a shard directory, manifest.json or world .yaml", path)


def _open_config(config: dict[str, Any], where: str = "dataset") -> Dataset:
    from torch.utils.data import Subset

    from hydranet.data.sources import open_source

    source = open_source(config, where)
    frames = source.options.frames
    return Subset(source, range(frames)) if frames is not None and frames < len(source) else source


def training_world(tree: dict[str, Any], dataset: str | None, where: str) -> tuple[dict[str, Any], int | None]:
    """``(world fields, frames)`` of the ``kind: world`` dataset ``dataset`` of a training config tree
    (``data.datasets.<name>`` or ``eval``); with ``dataset=None`` the only training world dataset.
    ``ValueError`` names the file and the world datasets to choose from."""
    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    sources = dict(data.get("datasets") or {})
    if isinstance(data.get("eval"), dict):
        sources["eval"] = data["eval"]
    worlds = {n: d for n, d in sources.items() if isinstance(d, dict) and d.get("kind") == "world"}
    if dataset is None:
        train_worlds = sorted(n for n in worlds if n != "eval" or "eval" in (data.get("datasets") or {}))
        if len(train_worlds) != 1:
            raise ValueError(f"{where}: a training config with world datasets {sorted(worlds)}: choose one "
                             "with --dataset NAME")
        dataset = train_worlds[0]
    if dataset not in worlds:
        raise ValueError(f"{where}: no world dataset '{dataset}' (world datasets: {sorted(worlds)})")
    return dict(worlds[dataset].get("world") or {}), worlds[dataset].get("frames")


def load_world_config(source: Any = None, overrides: dict[str, Any] | None = None, dataset: str | None = None):
    """A ``WorldConfig`` from None (defaults), a dict, a YAML path or a ``WorldConfig``, with ``overrides``
    applied. A YAML file may be a ``WorldConfig``, a file with a ``world:`` section, or a training
    config (``data``/``model``/``train``): then the world of dataset ``dataset`` (default: its only
    world dataset) is used. Errors are ``ValueError``s naming the file and the offending field."""
    import yaml
    from pydantic import ValidationError

    from hydranet.world import WorldConfig

    where = "world config"
    if isinstance(source, WorldConfig):
        data = source.model_dump()
    elif source is None:
        data = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        where = str(source)
        try:
            data = yaml.safe_load(Path(source).read_text()) or {}
        except OSError as e:
            raise ValueError(f"{where}: cannot read ({e.strerror})") from e
        except yaml.YAMLError as e:
            raise ValueError(f"{where}: not valid YAML ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of WorldConfig fields, got {type(data).__name__}")
        if isinstance(data.get("data"), dict):  # a training config: one of its world datasets
            data, _ = training_world(data, dataset, where)
        elif isinstance(data.get("world"), dict):  # a file with a world section
            data = data["world"]
    data |= overrides or {}
    try:
        return WorldConfig.model_validate(data)
    except ValidationError as e:
        from hydranet.config_errors import format_validation_error

        raise ValueError(format_validation_error(e, where, sep="; ")) from None
