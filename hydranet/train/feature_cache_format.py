"""Feature cache format: the on-disk layout, its constants and its error, shared by the writer
(``feature_cache_writer.py``) and the reader (``feature_cache.py``). A feature cache holds the frozen
trunk's FPN features, fp16, memory-mapped and sharded, plus labels and geometry.

Sub-graph training trains heads on a frozen trunk. The trunk (+ neck) is then a pure
function of the image, so its outputs can be computed once and read back every epoch: head-only
training skips the trunk's forward and backward, which is most of a HydraNet's compute. Layout::

    CACHE/
      cache.json                 manifest, written last (atomically): format, trunk hash, the data's
                                 setup (image size, rigs, BEV grid, classes), levels and shapes, stored
                                 labels and their specs, shards, size and write speed
      shard_00000/
        feat.p2.npy ...          float16 [F, N, C, h, w] per FPN level (np.load(mmap_mode="r"))
        intrinsics.npy           float32 [F, N, 3, 3]   (so BEV heads can be trained from the cache:
        T_ego_from_cam.npy       float32 [F, N, 4, 4]    fusion needs K and T)
        T_world_from_ego.npy     float32 [F, 4, 4]
        timestamp.npy, frame_index.npy, present.npy (bool [F, L], L = stored labels in manifest order)
        label.<name>.npy         dense labels [F, ...] in their own dtype (zeros where absent)
        ragged.<name>.<key>.npy  ragged labels concatenated over frames, with ragged.<name>.offsets.npy [F+1]
        meta.json                scene ids

The cache is keyed by the trunk hash (``hydranet.checkpoint.trunk_hash``: trunk + neck tensors,
BatchNorm statistics included); ``FeatureCache.check_trunk`` refuses a cache made by another trunk
with both hashes in the message. Each shard is written into a hidden temporary directory and renamed
into place when complete; the manifest is written last, so a crashed run leaves no readable cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydranet.data import known_labels
from hydranet.tasks import TASKS

FORMAT = "hydranet-feature-cache/2"  # 2: the manifest records the data's setup
MANIFEST = "cache.json"
GEOMETRY = ("intrinsics", "T_ego_from_cam", "T_world_from_ego", "timestamp", "frame_index")


class CacheError(ValueError):
    """A missing, corrupt, over-budget or mismatched feature cache; the message names the path."""


def task_labels() -> list[str]:
    """The labels every registered task learns from: the default set a cache stores, so a task added
    later (``--add-task``) finds its label in the cache."""

    return sorted({cls.label for cls in TASKS.values() if cls.label in known_labels()})


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file, fsync and rename: readers see the old
    file or the whole new one, never a torn write (the manifest is written this way, last)."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
