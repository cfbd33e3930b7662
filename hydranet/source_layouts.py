"""The ``DataLayout`` of every kind of source hydranet reads, and the config-time data check.

``hydranet.compat`` holds the check itself (``check_data_matches_model``); this module finds the
layout of a shard directory (from its manifest, no sample read), of an opened dataset, and of each
``data.datasets.<name>`` / ``data.eval`` section of a training config (any registered source kind:
a world config, shards, or sample 0 of any other source), so ``train``, ``eval`` and
``cache-features`` refuse a mismatch before the first frame is rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Subset

from hydranet.compat import DataLayout, check_data_matches_model, sample_layout, world_layout
from hydranet.data.manifest import manifest_path, read_manifest
from hydranet.datasets import open_source  # any other registered source: its rig from sample 0
from hydranet.world.config import load_world_config


def shards_layout(path: str | Path, source: str | None = None) -> DataLayout:
    """Layout from a shard directory's ``manifest.json`` (no sample is read)."""

    m = read_manifest(path)
    return DataLayout(source or str(manifest_path(path)), tuple(m.image_size), len(m.camera_names), m.grid_obj())


def dataset_layout(ds: Any, source: str) -> DataLayout | None:
    """Layout of an opened dataset (``SyntheticWorld``, ``ShardDataset``, ``Subset``/``ConcatDataset``
    of them); None for other datasets, which the caller checks by their samples instead."""
    if isinstance(ds, Subset):
        return dataset_layout(ds.dataset, source)
    if isinstance(ds, ConcatDataset):
        return dataset_layout(ds.datasets[0], source) if len(ds.datasets) == 1 else None
    if hasattr(ds, "manifest") and hasattr(ds.manifest, "image_size"):
        m = ds.manifest
        return DataLayout(source, tuple(m.image_size), len(m.camera_names), m.grid_obj())
    config = getattr(ds, "config", None)
    if config is not None and hasattr(config, "cameras") and hasattr(config, "bev_grid"):
        return world_layout(config, source)
    return None


def source_layout(ds_cfg: Any, source: str) -> DataLayout:
    """Layout of one ``data.datasets.<name>`` / ``data.eval`` entry of a training config."""
    if ds_cfg.kind == "world":

        return world_layout(load_world_config(ds_cfg.world), f"{source} (world)")
    if ds_cfg.kind == "shards":
        return shards_layout(ds_cfg.path, f"{source} ({ds_cfg.path})")

    src = open_source(ds_cfg.options(), source)
    layout = sample_layout(src[0], f"{source} ({ds_cfg.kind})")
    return DataLayout(layout.source, layout.image_size, layout.num_cameras, getattr(src, "grid", None))


def check_config_data(cfg: Any) -> None:
    """Every dataset of a training ``Config`` (and its eval set) against the config's model section."""
    model_cfg = cfg.resolved_model()
    sources = [(f"data.datasets.{name}", ds) for name, ds in sorted(cfg.data.datasets.items())]
    if cfg.data.eval is not None:
        sources.append(("data.eval", cfg.data.eval))
    for where, ds in sources:
        check_data_matches_model(source_layout(ds, where), model_cfg)
