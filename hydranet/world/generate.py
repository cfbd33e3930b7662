"""Write the synthetic world to shards: the engine behind ``hydranet generate``.

Sample ``i`` of the output is ``SyntheticWorld(config)[i]`` for ``i < frames``: the first ``frames``
samples of the world, i.e. whole consecutive scenes (temporal tasks need consecutive frames). When
``frames`` exceeds ``len(world)`` the config's ``num_scenes`` is raised to cover it; the manifest
records the config actually used.

Parallelism: with ``workers > 1`` a process pool renders and encodes samples while this process
writes them in index order, so the output is byte-identical for any number of workers.

Re-running with the same request is cheap: if ``out`` holds a complete dataset (manifest present,
every shard the recorded size) generated from the same source, nothing is written and the result
says ``up_to_date``. A different dataset already in ``out`` is an error unless ``overwrite``; an
unfinished or damaged one (unreadable manifest, missing or resized shard) is regenerated. The new
dataset replaces the old only once it is complete (``ShardWriter``): a failed or interrupted run leaves
``out`` as it was.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import hydranet
from hydranet.data import (
    IMAGE_FORMATS,
    MANIFEST_NAME,
    CodecError,
    ShardError,
    ShardManifest,
    ShardManifestError,
    ShardWriter,
    encode_sample,
    read_manifest,
    sample_key,
)
from hydranet.world.config import WorldConfig
from hydranet.world.dataset import GENERATOR_VERSION, SyntheticWorld


@dataclass
class GenerateResult:
    """What ``generate`` did: the dataset's ``manifest``, its ``root`` directory, and whether an identical
    dataset was already there (``up_to_date``: nothing written).
    """
    manifest: ShardManifest
    up_to_date: bool  # True: an identical dataset was already there and nothing was written
    root: Path


def _source_record(world_config: Any, frames: int, shard_size: int, image_format: str = "npz") -> dict[str, Any]:
    """What the manifest's ``source`` says for a synthetic dataset; equal records = same bytes."""
    return {"kind": "synthetic", "world_generator": GENERATOR_VERSION, "frames": frames, "shard_size": shard_size,
            "image_format": image_format, "world_config": world_config.model_dump(mode="json")}


def check_existing(out: Path, source: dict[str, Any]) -> ShardManifest | None:
    """The manifest if ``out`` already holds exactly this dataset, complete; None if ``out`` has no dataset.
    Raises ``ShardError`` if it holds a different one (the caller decides about ``--overwrite``)."""
    if not (out / MANIFEST_NAME).exists():
        return None
    try:
        m = read_manifest(out)
    except ShardManifestError:
        return None  # unreadable manifest: treat as an unfinished run and regenerate
    if m.source != source or m.generator.get("version") != hydranet.__version__:
        diff = _first_difference(m.source, source) if m.source != source else \
            f"generator version {m.generator.get('version')} != {hydranet.__version__}"
        raise ShardError(f"holds a different dataset ({diff}); pass --overwrite to replace it", out)
    for info in m.shards:
        path = out / info.name
        if not path.is_file() or path.stat().st_size != info.bytes:
            return None  # damaged: regenerate
    return m


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(a, b, f"{prefix}{k}.")
            return f"{prefix}{k}: {a!r} there, {b!r} requested"
    return "?"


def resolve(world_config: Any, frames: int | None, shard_size: int,
            image_format: str = "npz") -> tuple[Any, int, dict[str, Any]]:
    """Validate a request; returns (config actually used, frames, manifest ``source`` record)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    per_scene = world_config.frames_per_scene
    if frames is None:
        frames = world_config.num_scenes * per_scene
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if frames > world_config.num_scenes * per_scene:
        world_config = world_config.model_copy(update={"num_scenes": math.ceil(frames / per_scene)})
    return world_config, frames, _source_record(world_config, frames, shard_size, image_format)


def generate(out: str | os.PathLike, world_config: Any, frames: int | None = None, shard_size: int = 256,
             workers: int = 1, overwrite: bool = False, progress: Callable[[int], None] | None = None,
             image_format: str = "npz") -> GenerateResult:
    """Render ``frames`` samples (default: the whole world) into shards + manifest under ``out``.

    ``overwrite``: render even when ``out`` is up to date, and replace a different dataset there.
    ``progress(n)`` is called after every written sample with the count so far. Raises ``ShardError`` for a
    different dataset in ``out`` without ``overwrite``, ``OutputError`` for a non-empty ``out`` that holds no
    dataset, ``OutputWriteError`` naming the file for a full disk; ``out`` is then as it was."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    world_config, frames, source = resolve(world_config, frames, shard_size, image_format)
    out = Path(out)
    if not overwrite:
        existing = check_existing(out, source)
        if existing is not None:
            return GenerateResult(existing, True, out)
    world = SyntheticWorld(world_config)
    # check_existing let an unfinished or damaged dataset through: it is replaced like one --overwrite names
    replacing = overwrite or (out / MANIFEST_NAME).exists()
    writer = ShardWriter(out, shard_size, setup=world.setup, source=source, image_format=image_format,
                         overwrite=replacing)
    with writer:
        if workers == 1:
            for i in range(frames):
                writer.write_encoded(_encode(world, i, image_format))
                if progress is not None:
                    progress(i + 1)
        else:
            ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
            init = (world_config.model_dump(mode="json"), image_format)
            with ctx.Pool(workers, initializer=_init_worker, initargs=init) as pool:
                for i, result in enumerate(pool.imap(_encode_in_worker, range(frames), chunksize=1)):
                    if isinstance(result, str):
                        raise ShardError(f"generating sample {i} failed in a worker:\n{result}", out, sample_key(i))
                    writer.write_encoded(result)
                    if progress is not None:
                        progress(i + 1)
    return GenerateResult(read_manifest(out), False, out)


def _encode(world: Any, i: int, image_format: str) -> list[tuple[str, bytes]]:
    try:
        sample = world[i]
    except Exception as e:  # name the sample; the chained traceback keeps the world's detail
        raise ShardError(f"the world failed to produce sample {i} ({type(e).__name__}: {e})", key=sample_key(i)) from e
    try:
        return encode_sample(sample, image_format)
    except CodecError as e:
        raise ShardError(f"world sample {i} cannot be stored: {e}", key=sample_key(i)) from e


_WORLD: Any = None
_IMAGE_FORMAT = "npz"


def _init_worker(config: dict, image_format: str) -> None:
    torch.set_num_threads(1)  # parallelism comes from the processes
    global _WORLD, _IMAGE_FORMAT
    _WORLD = SyntheticWorld(WorldConfig.model_validate(config))
    _IMAGE_FORMAT = image_format


def _encode_in_worker(i: int) -> list[tuple[str, bytes]] | str:
    try:
        return _encode(_WORLD, i, _IMAGE_FORMAT)
    except Exception:  # ship the worker's traceback text: pickling arbitrary exceptions can itself fail
        return traceback.format_exc()
