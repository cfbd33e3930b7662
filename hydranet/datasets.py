"""Open any source of frames as a map-style dataset of ``Sample``: the ``--data`` argument of every command.

    from hydranet.data import open_source
    from hydranet.datasets import open_dataset

    ds = open_dataset("runs/data")                  # a shard directory (or its manifest.json)
    ds = open_dataset("synthetic")                  # SyntheticWorld(WorldConfig())
    ds = open_dataset("synthetic", world={"seed": 3, "num_scenes": 10})  # or a WorldConfig / YAML path
    ds = open_dataset("my_world.yaml")              # a YAML WorldConfig -> SyntheticWorld
    ds = open_dataset("nuscenes:/data/nuscenes")    # any registered source kind (hydranet.data.sources)
    ds = open_dataset("world:my_world.yaml", setup=model.setup)  # the world source, rendering a model's setup
    src = open_source({"kind": "world", "frames": 40, "world": {"seed": 3}})

This module sits to the right of both ``hydranet.data`` (the ``Sample`` contract, shards, loaders, the source
registry) and ``hydranet.world`` (the synthetic world, itself a producer of ``Sample``): it is the one place that
turns a ``--data`` string (a shard path or URL, ``synthetic``, a world YAML, ``KIND:PATH``) into frames. Every
source kind — the readers of ``hydranet.data.sources`` and the world's ``world`` source — comes from the one
source registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset, Subset

from hydranet.data import (
    MANIFEST_NAME,
    ShardDataset,
    ShardError,
    ShardManifestError,
    Source,
    is_url,
    open_source,
    parse_source_spec,
    source_class,
)
from hydranet.setup import OBJECT_LABELS, Setup
from hydranet.world import SyntheticWorld, load_world_config
from hydranet.yaml_files import read_yaml_mapping

# The source registry (hydranet.data.sources), re-exported here with every kind registered.
__all__ = ["dataset_setup", "open_data_option", "open_dataset", "renders_world", "source_config"]


def dataset_setup(ds: Dataset) -> Setup:
    """The ``Setup`` a dataset from ``open_dataset`` reports (every source, ``SyntheticWorld`` and
    ``ShardDataset`` have ``setup``), through ``Subset`` and ``ConcatDataset`` (whose parts must report one
    setup); ``TypeError`` for a dataset that reports none, or parts that report different setups."""
    ds = _unwrapped(ds)
    if isinstance(ds, ConcatDataset):
        setups = [dataset_setup(part) for part in ds.datasets]
        differs = next((i for i, s in enumerate(setups) if s != setups[0]), None)
        if differs is not None:
            raise TypeError(f"the parts of a ConcatDataset report different setups (part 0 and part {differs}): "
                            "frames of one dataset share one setup")
        return setups[0]
    setup = getattr(ds, "setup", None)
    if not isinstance(setup, Setup):
        raise TypeError(f"{type(ds).__name__} reports no setup (a Source, SyntheticWorld or ShardDataset does)")
    return setup


def renders_world(ds: Dataset) -> bool:
    """Whether a dataset from ``open_dataset`` is the synthetic world (``SyntheticWorld`` or the ``world`` source,
    through ``Subset`` and one-part ``ConcatDataset``): opened for a setup (``open_dataset(setup=)``), it renders it
    unless the world declares its own."""
    ds = _unwrapped(ds)
    return isinstance(ds, SyntheticWorld) or (isinstance(ds, Source) and ds.kind == "world")


def _unwrapped(ds: Dataset) -> Dataset:
    """The dataset under ``Subset``s and one-part ``ConcatDataset``s."""
    while isinstance(ds, Subset) or (isinstance(ds, ConcatDataset) and len(ds.datasets) == 1):
        ds = ds.dataset if isinstance(ds, Subset) else ds.datasets[0]
    return ds


def source_config(config: dict[str, Any], setup: Setup) -> dict[str, Any]:
    """A source config ``{"kind": ..., **options}`` (a dataset section's ``options()``, ``hydranet convert``'s) with
    the model's ``setup`` flowing in where it leaves it open: a world renders it unless its ``world`` (fields or a
    YAML path, read here: ``ValueError`` naming the file) declares a ``setup`` of its own; a source with an
    ``image_size`` option resizes to the setup's; a source that maps classes maps onto the setup's object
    vocabulary (``model_classes``). The grid of a source's BEV labels is not an option: the source is opened for
    the setup (``open_source``) and makes them on its grid."""
    out = dict(config)
    kind = str(out["kind"])
    if kind == "world":
        out["world"] = _world_rendering(out.get("world") or {}, setup)
        return out
    if "image_size" in source_class(kind).Options.model_fields and out.get("image_size") is None:
        out["image_size"] = list(setup.image_size)
    vocabulary = next((v for v in map(setup.vocabulary, OBJECT_LABELS) if v is not None), None)
    if source_class(kind).classes and out.get("model_classes") is None and vocabulary is not None:
        out["model_classes"] = list(vocabulary)
    return out


def open_dataset(spec: str | os.PathLike | Any, world: Any = None, labels: list[str] | None = None,
                 setup: Setup | None = None) -> Dataset:
    """A map-style dataset of ``Sample`` from a spec every command can take as ``--data``:

    - a source config mapping ``{"kind": "nuscenes", "dataroot": ..., ...}`` (any registered kind,
      see ``hydranet.data.sources`` and ``hydranet.world.source``; ``frames`` keeps the first N
      samples, a world renders that many, by default its own length) -> that source
    - ``"KIND:PATH"`` for a registered kind, e.g. ``"nuscenes:/data/nuscenes"`` -> that source with
      its path option set (``--version`` etc. take their defaults)
    - a ``.yaml`` file whose top level has ``kind:`` -> that source config

    - a shard directory, or its ``manifest.json``          -> ``ShardDataset`` (``labels`` limits decoding)
    - an fsspec URL of one (``s3://``, ``gs://``, ``https://``, ``file://``) -> ``ShardDataset`` streaming it
    - ``"synthetic"``                                       -> ``SyntheticWorld(world)``; ``world`` is a
      ``WorldConfig``, a dict of its fields, a YAML path, or None for the defaults
    - ``"synthetic:<world.yaml>"`` or a ``.yaml``/``.yml`` path -> ``SyntheticWorld`` from that file
    - a ``WorldConfig``                                     -> ``SyntheticWorld`` of it

    ``setup``: open the data *for a model* of this setup, as training opens its datasets (``source_config``): a
    world without a ``setup`` of its own renders it, a source resizes to its image size, maps classes onto its
    vocabulary and makes BEV labels on its grid. Shards are read as they were written (their setup is fixed).
    """
    if isinstance(spec, dict):
        return _open_config(spec, setup=setup)
    if isinstance(spec, str) and not spec.startswith("synthetic") and (config := parse_source_spec(spec)):
        return _open_config(config, setup=setup)
    if isinstance(spec, str | os.PathLike) and Path(spec).suffix in (".yaml", ".yml") and Path(spec).is_file():
        tree = read_yaml_mapping(spec, ValueError, "a source config or a mapping of WorldConfig fields", empty={})
        if "kind" in tree:
            return _open_config(tree, str(spec), setup)
    if not isinstance(spec, str | os.PathLike):  # a WorldConfig
        return SyntheticWorld(_world_for(spec, setup))
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:") or Path(text).suffix in (".yaml", ".yml"):
        named = text == "synthetic" or text.startswith("synthetic:")
        source = (text.partition(":")[2] or world) if named else text
        return SyntheticWorld(_world_for(source, setup))
    if is_url(text) or text.startswith("file://"):  # shards behind a URL: streamed by byte range (storage.py)
        return ShardDataset(text, labels=labels)
    path = Path(text)
    if path.is_dir() or path.name == MANIFEST_NAME:
        return ShardDataset(path, labels=labels)
    if not path.exists():
        raise ShardManifestError(f"no such dataset: expected {_FORMS}", path)
    raise ShardManifestError(f"not a dataset: expected {_FORMS}", path)


# Every form of --data, for the error that names none of them.
_FORMS = ("a shard directory or its manifest.json, a URL of one (s3://, gs://, https://), KIND:PATH of a registered "
          "source (e.g. nuscenes:/data/nuscenes, world:world.yaml), a source YAML with `kind:`, 'synthetic', "
          "'synthetic:<world.yaml>' or a world .yaml")


def _world_for(source: Any, setup: Setup | None) -> Any:
    """The ``WorldConfig`` of ``source``, rendering ``setup`` when given and the world declares no setup."""
    return load_world_config(source if setup is None else _world_rendering(source, setup))


def _world_rendering(world: Any, setup: Setup) -> Any:
    """``world`` (``WorldConfig`` fields, a world YAML path, a ``WorldConfig`` or None) as it is when it declares a
    ``setup`` of its own, else as ``WorldConfig`` fields with ``setup`` added: the one rule by which a world opened
    for a model renders the model's setup. A YAML path is read here (``ValueError`` naming the file)."""
    if isinstance(world, dict):
        return world if "setup" in world else {**world, "setup": setup.model_dump(mode="json")}
    cfg = load_world_config(world)
    if "setup" in cfg.model_fields_set:
        return world
    return {**cfg.model_dump(mode="json"), "setup": setup.model_dump(mode="json")}


def _open_config(config: dict[str, Any], where: str = "dataset", setup: Setup | None = None) -> Dataset:
    if setup is not None:
        config = source_config(config, setup)
    source = open_source(config, where, setup=setup)
    frames = source.options.frames
    return Subset(source, range(frames)) if frames is not None and frames < len(source) else source


def open_data_option(spec: str | os.PathLike | Any, option: str = "--data", **kwargs: Any) -> Dataset:
    """``open_dataset(spec, **kwargs)`` for a command's data option: an error opening it (``ShardError``,
    ``ValueError`` with a plain message) is raised again, of the same type (so the same exit code), naming the
    option and the spec first, as every command's option errors do: ``--data runs/x: no such dataset ...``."""
    try:
        return open_dataset(spec, **kwargs)
    except (ShardError, ValueError) as e:
        message = str(e)
        if len(e.args) == 1 and message == str(e.args[0]) and not message.startswith(option):
            # "runs/x: no such dataset" names the spec as typed; "runs/x/manifest.json: ..." names a file in it
            e.args = (f"{option} {message}" if message.startswith(f"{spec}:") else f"{option} {spec}: {message}",)
        raise
