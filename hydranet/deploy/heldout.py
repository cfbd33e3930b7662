"""Frames for deployment checks: synthetic worlds rendering a graph's manifest ``Setup`` (its rig — any camera
count, K, T, native sizes — its image size, BEV grid and class vocabularies).

Calibration (INT8) and evaluation (parity, metric drop) use *different* world seeds, both distinct
from the training defaults, so no check is scored on the frames it was tuned on. Frames are spread
over scenes (one every few frames of each) rather than consecutive, so a few frames still cover
different layouts, lighting and traffic.
"""

from __future__ import annotations

from collections.abc import Iterator

from hydranet.data import Batch, collate
from hydranet.deploy.manifest import ExportManifest
from hydranet.world import SyntheticWorld, WorldConfig

EVAL_SEED = 7_100_001  # held-out frames: parity and metric drop
CALIB_SEED = 7_200_001  # INT8 calibration frames
_FRAMES_PER_SCENE = 8
STRIDE = 4  # frames taken per scene: 0, 4 (two per 8-frame scene)


def _manifest_world(manifest: ExportManifest, seed: int, num_scenes: int, frames_per_scene: int) -> SyntheticWorld:
    """A ``SyntheticWorld`` of ``num_scenes`` × ``frames_per_scene`` frames rendering the manifest's setup (its
    rig in graph camera order, image size, BEV grid, classes)."""
    return SyntheticWorld(WorldConfig(seed=seed, num_scenes=num_scenes, frames_per_scene=frames_per_scene,
                                      setup=manifest.setup))


def world_for(manifest: ExportManifest, seed: int, frames: int) -> SyntheticWorld:
    """The manifest's world (``_manifest_world``) with enough scenes for ``frames`` spread-out frames."""
    per_scene = _FRAMES_PER_SCENE // STRIDE
    return _manifest_world(manifest, seed, max(1, -(-frames // per_scene)), _FRAMES_PER_SCENE)


def spread_indices(frames: int) -> list[int]:
    """``frames`` world indices, ``STRIDE`` apart within each scene."""
    per_scene = _FRAMES_PER_SCENE // STRIDE
    return [(i // per_scene) * _FRAMES_PER_SCENE + (i % per_scene) * STRIDE for i in range(frames)]


def _world_batches(world, indices: list[int], batch_size: int) -> Iterator[Batch]:
    """Collated batches of ``world[i]`` for ``indices`` in order, ``batch_size`` samples each (the last may be
    smaller)."""
    for s in range(0, len(indices), batch_size):
        yield collate([world[i] for i in indices[s:s + batch_size]])


def heldout_batches(manifest: ExportManifest, frames: int, batch_size: int, seed: int = EVAL_SEED) -> Iterator[Batch]:
    """Batches of ``frames`` held-out frames for the manifest's rig."""
    world = world_for(manifest, seed, frames)
    return _world_batches(world, spread_indices(frames), batch_size)


def heldout_sequence_batches(manifest: ExportManifest, frames: int, seed: int = EVAL_SEED) -> Iterator[Batch]:
    """``frames`` *consecutive* held-out frames of ``manifest.batch`` scenes (sample b of every batch is scene
    b), for checks of a temporal graph: its memory carries over from one frame to the next only in a sequence."""
    world = _manifest_world(manifest, seed, manifest.batch, frames)
    for f in range(frames):
        yield collate([world[b * frames + f] for b in range(manifest.batch)])
