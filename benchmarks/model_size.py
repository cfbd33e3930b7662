"""Model sizes: parameters of every RegNet trunk preset and of every model preset, part by part.

Prints one JSON object (docs/model.md's preset tables are rendered from it, ``docs/results/model_size.json``):

- ``trunks``: per ``TRUNK_PRESETS`` entry its stage ``widths``, ``depths``, ``group_width``, ``se`` (RegNetY's
  squeeze-excite) and ``params`` (the trunk alone, no stem-less variants).
- ``models``: per ``MODEL_PRESETS`` entry (all seven tasks, default options) the config that decides its size
  (trunk, neck channels and levels, fusion levels, heights, stride and channels, BEV channels, input size) and
  ``params`` as ``HydraNet.parameter_counts()`` splits them (trunk, neck, fusion with the BEV encoder, each head,
  total) plus ``heads``, the seven heads together.
- ``feature_cache``: per model preset, what ``hydranet cache-features`` stores per frame (MB: fp16 FPN features
  of every level, every label of the seven tasks, the geometry), measured by writing a one-frame cache of one
  synthetic day frame at the preset's size (``tiny`` at the demo's 96x192, ``base`` at 256x512; 8 cameras,
  1 m grid), ``gb_per_10000_frames``, and ``p2_share``, the stride-4 level's share of the feature bytes.
- ``temporal_state``: the video memory's state (``TemporalState``, float32) of the ``tiny`` preset with
  ``fusion.temporal: true`` per sequence, in MB, on the BEV grid of ``configs/temporal.yaml`` (``grid``).

Counting only: no training, no timing, well under a minute on one core.

    .venv/bin/python benchmarks/model_size.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from hydranet.checkpoint import trunk_hash
from hydranet.model import MODEL_PRESETS, TRUNK_PRESETS, ModelConfig, create_model
from hydranet.train.feature_cache_writer import write_cache
from hydranet.world import SyntheticWorld, WorldConfig

CACHE_IMAGE_SIZES = {"tiny": (96, 192), "base": (256, 512)}


def trunk_sizes() -> dict[str, dict[str, Any]]:
    out = {}
    for name, spec in TRUNK_PRESETS.items():
        model = create_model(ModelConfig.preset("tiny", trunk={"name": name}, tasks={"drivable": {}}))
        out[name] = {"widths": list(spec.widths), "depths": list(spec.depths), "group_width": spec.group_width,
                     "se": spec.se_ratio > 0, "params": model.parameter_counts()["trunk"]}
    return out


def model_sizes() -> dict[str, dict[str, Any]]:
    out = {}
    for name in MODEL_PRESETS:
        cfg = ModelConfig.preset(name)
        counts = create_model(cfg).parameter_counts()
        counts["heads"] = sum(v for k, v in counts.items() if k.startswith("head/"))
        out[name] = {"trunk": cfg.trunk.name, "neck": {"channels": cfg.neck.channels, "min_level": cfg.neck.min_level},
                     "fusion": {"levels": list(cfg.fusion.levels), "heights": len(cfg.fusion.heights),
                                "stride": cfg.fusion.stride, "channels": cfg.fusion.channels},
                     "bev_channels": cfg.bev_channels, "image_size": list(cfg.setup.image_size),
                     "tasks": len(cfg.tasks), "params": counts}
    return out


def feature_cache() -> dict[str, dict[str, Any]]:
    out = {}
    for name, size in CACHE_IMAGE_SIZES.items():
        setup = {"image_size": list(size), "grid": {"cell": 1.0}}
        model = create_model(ModelConfig.preset(name, setup=setup))
        world = SyntheticWorld(WorldConfig(seed=11, num_scenes=1, frames_per_scene=1, lighting="day", fog=0.0,
                                           setup=setup))
        with tempfile.TemporaryDirectory(prefix="hydranet-model-size-") as tmp:
            manifest = write_cache(model, [world[0]], Path(tmp) / "cache", trunk_hash=trunk_hash(model),
                                   setup=world.setup, batch_size=1)
        est, levels = manifest["estimate_bytes_per_frame"], manifest["levels"]
        p2 = levels.get("p2")
        out[name] = {"image_size": list(size), "neck_channels": model.cfg.neck.channels, "levels": list(levels),
                     "mb_per_frame": {k: round(v / 1e6, 3) for k, v in est.items()},
                     "written_mb_per_frame": round(manifest["bytes_per_frame"] / 1e6, 3),
                     "gb_per_10000_frames": round(est["total"] * 10_000 / 1e9, 1),
                     "p2_share": None if p2 is None else round(2 * _prod(p2) / est["features"], 3)}
    return out


def _prod(shape: list[int]) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


def temporal_state(cell: float = 1.0, span: float = 32.0) -> dict[str, Any]:
    grid = {"x_range": [-span, span], "y_range": [-span, span], "cell": cell}
    model = create_model(ModelConfig.preset("tiny", fusion={"temporal": True}, setup={"grid": grid}))
    state = model.init_state(1)
    nbytes = sum(getattr(state, f.name).numel() * getattr(state, f.name).element_size()
                 for f in dataclasses.fields(state))
    return {"preset": "tiny", "grid": grid, "mb_per_sequence": round(nbytes / 1e6, 3)}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(json.dumps({"benchmark": "model_size", "trunks": trunk_sizes(), "models": model_sizes(),
                      "feature_cache": feature_cache(),
                      "temporal_state": temporal_state()}, indent=1))


if __name__ == "__main__":
    main()
