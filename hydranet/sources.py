"""Open any source of frames as a map-style dataset of ``Sample``: the ``--data`` argument of every command.

    from hydranet.sources import open_dataset

    ds = open_dataset("runs/data")                  # a shard directory (or its manifest.json)
    ds = open_dataset("synthetic")                  # SyntheticWorld(WorldConfig())
    ds = open_dataset("synthetic", world={"seed": 3, "num_scenes": 10})  # or a WorldConfig / YAML path
    ds = open_dataset("configs/world_small.yaml")   # a YAML WorldConfig -> SyntheticWorld

This module sits to the right of both ``hydranet.data`` (the ``Sample`` contract, shards, loaders)
and ``hydranet.world`` (the synthetic world, itself a producer of ``Sample``): it is the one place
that knows every kind of source, so neither of those packages imports the other's consumers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from hydranet.data.manifest import MANIFEST_NAME, ManifestError
from hydranet.data.shards import ShardDataset
from hydranet.world.config import load_world_config
from hydranet.world.dataset import SyntheticWorld

__all__ = ["open_dataset", "load_world_config"]


def open_dataset(spec: str | os.PathLike | Any, world: Any = None, labels: list[str] | None = None) -> Dataset:
    """A map-style dataset of ``Sample`` from a spec every command can take as ``--data``:

    - a shard directory, or its ``manifest.json``          -> ``ShardDataset`` (``labels`` limits decoding)
    - ``"synthetic"``                                       -> ``SyntheticWorld(world)``; ``world`` is a
      ``WorldConfig``, a dict of its fields, a YAML path, or None for the defaults
    - ``"synthetic:<world.yaml>"`` or a ``.yaml``/``.yml`` path -> ``SyntheticWorld`` from that file
    - a ``WorldConfig``                                     -> ``SyntheticWorld`` of it
    """
    if not isinstance(spec, str | os.PathLike):  # a WorldConfig, its fields as a dict, or None
        return SyntheticWorld(load_world_config(spec))
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:") or Path(text).suffix in (".yaml", ".yml"):
        named = text == "synthetic" or text.startswith("synthetic:")
        source = (text.partition(":")[2] or world) if named else text
        return SyntheticWorld(load_world_config(source))
    path = Path(text)
    if path.is_dir() or path.name == MANIFEST_NAME:
        return ShardDataset(path, labels=labels)
    if not path.exists():
        raise ManifestError(f"no such dataset: expected a shard directory, a manifest.json, 'synthetic', "
                            f"'synthetic:<world.yaml>' or a world .yaml (got {text!r})", path)
    raise ManifestError("not a dataset: expected a shard directory, manifest.json or world .yaml", path)
