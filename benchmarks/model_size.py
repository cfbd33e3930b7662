"""Model sizes: parameters of every RegNet trunk preset and of every model preset, part by part.

Prints one JSON object (docs/model.md's preset tables are rendered from it, ``docs/results/model_size.json``):

- ``trunks``: per ``TRUNK_PRESETS`` entry its stage ``widths``, ``depths``, ``group_width``, ``se`` (RegNetY's
  squeeze-excite) and ``params`` (the trunk alone, no stem-less variants).
- ``models``: per ``MODEL_PRESETS`` entry (all seven tasks, default options) the config that decides its size
  (trunk, neck channels and levels, fusion levels, heights, stride and channels, BEV channels, input size) and
  ``params`` as ``HydraNet.parameter_counts()`` splits them (trunk, neck, fusion with the BEV encoder, each head,
  total) plus ``heads``, the seven heads together.
- ``temporal_state``: the video memory's state (``TemporalState``, float32) of the ``tiny`` preset with
  ``fusion.temporal: true`` per sequence, in MB, on the BEV grid of ``configs/temporal.yaml`` (``grid``).

Counting only: no data, no timing, a few seconds on one core.

    .venv/bin/python benchmarks/model_size.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import torch

from hydranet.model import MODEL_PRESETS, TRUNK_PRESETS, ModelConfig, create_model


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
                      "temporal_state": temporal_state()}, indent=1))


if __name__ == "__main__":
    main()
