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

Only the check and the layouts that need no data reader live here (a ``WorldConfig``, one
``Sample``), so the exporter does not import every source; the layouts of shard directories, opened
datasets and a training config's data sections are in ``hydranet.source_layouts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydranet.geometry import BevGrid
from hydranet.tasks import TASKS


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


def world_layout(world_cfg: Any, source: str) -> DataLayout:
    """Layout of a ``WorldConfig``: image (H, W) pixels, camera count and BEV grid; ``source`` names it in errors."""
    return DataLayout(source, (int(world_cfg.height), int(world_cfg.width)), len(world_cfg.cameras),
                      world_cfg.bev_grid)


def sample_layout(sample: Any, source: str) -> DataLayout:
    """Layout of one ``Sample`` (datasets without metadata); no grid: BEV labels carry none."""
    return DataLayout(source, tuple(int(v) for v in sample.images.shape[-2:]), int(sample.images.shape[0]))
