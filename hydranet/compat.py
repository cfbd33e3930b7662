"""Data and model must agree, or say why not: the one check every command makes.

A model is built for one BEV grid, one image size and the camera counts its config accepts; data
(a synthetic world config, a shard directory's manifest, a suite scenario) is rendered or recorded
with its own. ``check_data_matches_model`` compares the two and raises ``DataMismatchError`` naming
both values, so ``train``, ``train --from``, ``cache-features``, ``eval`` and ``export --verify``
refuse a mismatch at config time, before any frame is rendered, instead of a head silently
resampling its logits or the fusion projecting through the wrong rig.

The camera rule is "the data's camera count is one the model accepts"; ``accepted_camera_counts``
is its single source (today the model's ``num_cameras``), so widening it (multi-rig training) is a
change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydranet.data.manifest import manifest_path, read_manifest
from hydranet.datasets import open_source  # any other registered source: its rig from sample 0
from hydranet.geometry import BevGrid
from hydranet.tasks import TASKS
from hydranet.world.config import load_world_config


class DataMismatchError(ValueError):
    """Data whose grid, image size or camera count the model was not built for; names both values."""


@dataclass(frozen=True)
class DataLayout:
    """What a data source fixes: ``grid`` (None when it has no BEV labels), ``image_size`` (H, W)
    in pixels, and the number of cameras per frame. ``source`` names it in messages."""

    source: str
    image_size: tuple[int, int]
    num_cameras: int
    grid: BevGrid | None = None


def accepted_camera_counts(model_cfg: Any) -> tuple[int, ...]:
    """Camera counts a model with this ``ModelConfig`` accepts (the rule lives in
    ``ModelConfig.accepted_camera_counts``: ``num_cameras`` plus the multi-rig ``camera_counts``)."""
    if hasattr(model_cfg, "accepted_camera_counts"):
        return tuple(model_cfg.accepted_camera_counts())
    return (int(model_cfg.num_cameras),)


def _grid_text(grid: BevGrid) -> str:
    return f"x {tuple(grid.x_range)} m, y {tuple(grid.y_range)} m, cell {grid.cell} m ({grid.rows}x{grid.cols})"


def check_data_matches_model(layout: DataLayout, model_cfg: Any, model_name: str = "the model") -> None:
    """Raise ``DataMismatchError`` when ``layout`` differs from ``model_cfg`` (a ``ModelConfig``).

    The BEV grid is compared only when the model has a BEV task: a camera-only model does not
    read BEV labels. Errors name the data source, the field and both values."""
    h, w = (int(v) for v in model_cfg.image_size)
    if tuple(int(v) for v in layout.image_size) != (h, w):
        raise DataMismatchError(f"{layout.source}: images are {layout.image_size[0]}x{layout.image_size[1]} (HxW) "
                                f"but {model_name} is built for {h}x{w} (model.image_size)")
    counts = accepted_camera_counts(model_cfg)
    if layout.num_cameras not in counts:
        accepted = counts[0] if len(counts) == 1 else f"one of {list(counts)}"
        raise DataMismatchError(f"{layout.source}: frames have {layout.num_cameras} cameras but {model_name} "
                                f"accepts {accepted} (model.num_cameras, model.camera_counts)")
    if layout.grid is not None and _has_bev_task(model_cfg):
        model_grid = model_cfg.grid.to_grid()
        if layout.grid != model_grid:
            raise DataMismatchError(f"{layout.source}: BEV grid is {_grid_text(layout.grid)} but {model_name} "
                                    f"uses {_grid_text(model_grid)} (model.grid)")


def _has_bev_task(model_cfg: Any) -> bool:

    return any(name in TASKS and TASKS[name].space == "bev" for name in model_cfg.tasks)


# ---------------------------------------------------------------------------------------------
# layouts of the sources hydranet reads
# ---------------------------------------------------------------------------------------------


def world_layout(world_cfg: Any, source: str) -> DataLayout:
    """Layout of a ``WorldConfig``: image (H, W) pixels, camera count and BEV grid; ``source`` names it in errors."""
    return DataLayout(source, (int(world_cfg.height), int(world_cfg.width)), len(world_cfg.cameras),
                      world_cfg.bev_grid)


def shards_layout(path: str | Path, source: str | None = None) -> DataLayout:
    """Layout from a shard directory's ``manifest.json`` (no sample is read)."""

    m = read_manifest(path)
    return DataLayout(source or str(manifest_path(path)), tuple(m.image_size), len(m.camera_names), m.grid_obj())


def dataset_layout(ds: Any, source: str) -> DataLayout | None:
    """Layout of an opened dataset (``SyntheticWorld``, ``ShardDataset``, ``Subset``/``ConcatDataset``
    of them); None for other datasets, which the caller checks by their samples instead."""
    from torch.utils.data import ConcatDataset, Subset

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


def sample_layout(sample: Any, source: str) -> DataLayout:
    """Layout of one ``Sample`` (datasets without metadata); no grid: BEV labels carry none."""
    return DataLayout(source, tuple(int(v) for v in sample.images.shape[-2:]), int(sample.images.shape[0]))


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
