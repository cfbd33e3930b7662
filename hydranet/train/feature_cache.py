"""Reading a feature cache: ``FeatureCache`` (a cache directory, memory-mapped lazily per process),
``CachedFeatureDataset`` (``ds[i] -> CachedSample``) and ``collate_cached`` (-> ``CachedBatch``, a
``Batch`` whose trunk features are already computed), so heads train on a frozen trunk without running it.

The layout, the manifest and ``CacheError`` are in ``feature_cache_format.py``; ``write_cache`` is in
``feature_cache_writer.py``. Both are re-exported here: ``hydranet.train.feature_cache`` is the one
import for users of the cache.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor
from torch.utils.data import Dataset

from hydranet.config_errors import format_validation_error
from hydranet.data import Batch, Sample, collate, is_ragged
from hydranet.setup import Setup
from hydranet.train.feature_cache_format import FORMAT, MANIFEST, CacheError

MAX_OPEN_SHARDS = 32  # memory-mapped shards kept open per process (see FeatureCache._shard)



class FeatureCache:
    """A cache directory opened for reading; arrays are memory-mapped lazily, per process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            hint = " (an interrupted write: run cache-features again)" if any(self.path.glob(".tmp-*")) else ""
            raise CacheError(f"{self.path}: not a feature cache (no {MANIFEST}){hint}")
        try:
            self.manifest: dict[str, Any] = json.loads(file.read_text())
        except ValueError as e:
            raise CacheError(f"{file}: corrupt manifest ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise CacheError(f"{file}: format {self.manifest.get('format')!r}, this hydranet reads {FORMAT!r}: "
                             f"rebuild the cache: {self._rebuild_command()}")
        needed = {"trunk_hash": str, "labels": list, "levels": dict, "camera_names": list, "image_hw": list,
                  "shards": list}
        bad = [k for k, kind in needed.items() if not isinstance(self.manifest.get(k), kind)]
        if bad:
            fields = ", ".join(f"'{k}' (a {needed[k].__name__})" for k in bad)
            raise CacheError(f"{file}: {fields} missing or of another type: rebuild the cache: "
                             f"{self._rebuild_command()}")
        if "setup" not in self.manifest:
            raise CacheError(f"{file}: records no 'setup' (the data's image size, rigs, grid and classes that the "
                             f"heads trained on it are checked against): rebuild the cache: {self._rebuild_command()}")
        try:
            self.setup = Setup.model_validate(self.manifest["setup"])  # the data's: heads are checked against it
        except ValidationError as e:
            raise CacheError(f"{format_validation_error(e, str(file), prefix='setup', sep='; ')}; rebuild the cache: "
                             f"{self._rebuild_command()}") from None
        self.trunk_hash: str = self.manifest["trunk_hash"]
        self.labels: list[str] = list(self.manifest["labels"])
        self.levels: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in self.manifest["levels"].items()}
        self.camera_names: tuple[str, ...] = tuple(self.manifest["camera_names"])
        self.image_hw: tuple[int, int] = tuple(self.manifest["image_hw"])  # type: ignore[assignment]
        sizes = [s["frames"] for s in self.manifest["shards"]]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._arrays: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._meta: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _rebuild_command(self) -> str:
        """The ``cache-features`` command that writes this cache again, from what it records: the checkpoint, the
        data and its ``--world`` overrides, the frames, labels and levels (placeholders for what it does not)."""
        m = self.manifest
        ckpt, data = m.get("checkpoint"), m.get("data")
        words = ["hydranet cache-features", f"--ckpt {ckpt if isinstance(ckpt, str) else 'CHECKPOINT'}",
                 f"--data {data if isinstance(data, str) else 'DATA'}"]
        words += [f"--world {item}" for item in m.get("world") or [] if isinstance(item, str)]
        if isinstance(m.get("frames"), int):
            words.append(f"--frames {m['frames']}")
        if isinstance(m.get("labels"), list) and m["labels"]:
            words.append(f"--labels {','.join(map(str, m['labels']))}")
        if isinstance(m.get("levels"), dict) and m["levels"]:
            words.append(f"--levels {','.join(map(str, m['levels']))}")
        return "`" + " ".join([*words, f"-o {self.path} --overwrite"]) + "`"

    def check_trunk(self, expected: str, what: str = "the model") -> None:
        """Refuse a cache written by another trunk (weights or BatchNorm statistics differ)."""
        if expected != self.trunk_hash:
            raise CacheError(f"{self.path}: feature cache was made by trunk {self.trunk_hash[:16]}… but {what} has "
                             f"trunk {expected[:16]}…: its features would be wrong for these heads; rebuild it with "
                             f"`hydranet cache-features --ckpt <that checkpoint>` (full hashes: cache "
                             f"{self.trunk_hash}, {what} {expected})")

    def locate(self, i: int) -> tuple[int, int]:
        """Frame ``i`` -> (shard index, row within the shard); ``IndexError`` outside ``[0, len)``."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: frame {i} out of range [0, {len(self)})")
        s = int(np.searchsorted(self.starts, i, side="right") - 1)
        return s, i - int(self.starts[s])

    def _shard(self, s: int) -> dict[str, np.ndarray]:
        # Python's mmap keeps a duplicated file descriptor per mapped array: a bounded LRU of open shards
        # keeps a large cache (thousands of shard files) under the usual 1024-descriptor limit.
        if s in self._arrays:
            self._arrays.move_to_end(s)
            return self._arrays[s]
        d = self.path / self.manifest["shards"][s]["name"]
        try:
            self._meta[s] = json.loads((d / "meta.json").read_text())["scene_ids"]
        except (OSError, ValueError, KeyError) as e:
            raise CacheError(f"{d}: unreadable shard ({e})") from None
        self._arrays[s] = {}
        while len(self._arrays) > MAX_OPEN_SHARDS:
            old, _ = self._arrays.popitem(last=False)
            self._meta.pop(old, None)
        return self._arrays[s]

    def array(self, s: int, name: str) -> np.ndarray:
        """Array ``name`` of shard ``s``, memory-mapped read-only on first use."""
        arrays = self._shard(s)
        if name not in arrays:
            file = self.path / self.manifest["shards"][s]["name"] / f"{name}.npy"
            try:
                arrays[name] = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(f"{file}: unreadable cache array ({e})") from None
        return arrays[name]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own memory maps
        return {**self.__dict__, "_arrays": OrderedDict(), "_meta": {}}

    def label_presence(self, labels: list[str]) -> dict[str, np.ndarray]:
        """label -> bool ``[len(self)]``: which frames carry it (all False for a label the cache does not store).
        Reads every shard's small ``present.npy``; ``CacheError`` names an unreadable one."""
        out = {}
        parts = []
        for shard in self.manifest["shards"]:  # read, not mapped: a few bytes per frame
            file = self.path / shard["name"] / "present.npy"
            try:
                parts.append(np.load(file))
            except (OSError, ValueError) as e:
                raise CacheError(f"{file}: unreadable cache array ({e})") from None
        present = np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), bool)
        for k in labels:
            out[k] = present[:, self.labels.index(k)].copy() if k in self.labels else np.zeros(len(self), bool)
        return out

    def read(self, i: int, labels: list[str] | None = None, levels: list[str] | None = None) -> CachedSample:
        """Frame ``i``; ``labels``/``levels`` limit what is read (None = everything stored)."""
        s, j = self.locate(i)
        if levels is not None and not set(levels) <= set(self.levels):
            raise CacheError(f"{self.path}: FPN level(s) {sorted(set(levels) - set(self.levels))} are not cached "
                             f"(cached: {sorted(self.levels)})")

        def row(name: str, index: Any = j) -> Tensor:  # a copy: the batch must not alias the read-only map
            return torch.from_numpy(np.array(self.array(s, name)[index]))

        feats = {lv: row(f"feat.{lv}") for lv in (self.levels if levels is None else levels)}
        present = self.array(s, "present")[j]
        out: dict[str, Any] = {}
        for li, label in enumerate(self.labels):
            if (labels is not None and label not in labels) or not present[li]:
                continue
            if is_ragged(label):
                lo, hi = (int(x) for x in self.array(s, f"ragged.{label}.offsets")[j:j + 2])
                keys = self.manifest["label_specs"][label]["keys"]
                out[label] = {k: row(f"ragged.{label}.{k}", slice(lo, hi)) for k in keys}
            else:
                out[label] = row(f"label.{label}")
        return CachedSample(
            features=feats, intrinsics=row("intrinsics"), T_ego_from_cam=row("T_ego_from_cam"),
            T_world_from_ego=row("T_world_from_ego"), timestamp=float(self.array(s, "timestamp")[j]),
            scene_id=self._meta[s][j], frame_index=int(self.array(s, "frame_index")[j]),
            camera_names=self.camera_names, image_hw=self.image_hw, labels=out)


@dataclass
class CachedSample:
    """One cached frame: fp16 features ``{level: [N, C, h, w]}`` instead of images; labels as in ``Sample``."""

    features: dict[str, Tensor]
    intrinsics: Tensor
    T_ego_from_cam: Tensor
    T_world_from_ego: Tensor
    timestamp: float
    scene_id: str
    frame_index: int
    camera_names: tuple[str, ...]
    image_hw: tuple[int, int]
    labels: dict[str, Any]


@dataclass
class CachedBatch(Batch):
    """A ``Batch`` whose images are a zero-stride placeholder (tasks read only their shape) and whose
    ``features`` are the cached FPN levels, ``{level: [B*N, C, h, w]}`` (fp16 as stored)."""

    features: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> CachedBatch:
        """A copy on ``device`` (features non-blocking); the image placeholder stays a zero-stride view."""
        shape = self.images.shape  # move a scalar, then expand again: the placeholder never materialises
        moved = Batch.to(replace(self, images=torch.zeros((), dtype=torch.uint8)), device)
        moved.images = torch.zeros((), dtype=torch.uint8, device=moved.images.device).expand(shape)
        return CachedBatch(**{k: getattr(moved, k) for k in Batch.__dataclass_fields__},
                           features={k: v.to(device, non_blocking=True) for k, v in self.features.items()})


def collate_cached(samples: list[CachedSample]) -> CachedBatch:
    """Like ``hydranet.data.sample.collate``, for cached frames (features stacked camera-major)."""
    if not samples:
        raise ValueError("collate_cached: empty list of samples")
    template = [Sample(images=torch.zeros((len(s.camera_names), 3, 1, 1), dtype=torch.uint8),
                       intrinsics=s.intrinsics, T_ego_from_cam=s.T_ego_from_cam, T_world_from_ego=s.T_world_from_ego,
                       timestamp=s.timestamp, scene_id=s.scene_id, camera_names=s.camera_names,
                       frame_index=s.frame_index, labels=s.labels) for s in samples]
    base = collate(template)  # labels, presence masks and geometry exactly as for real frames
    b, n = len(samples), len(samples[0].camera_names)
    h, w = samples[0].image_hw
    base.images = torch.zeros((), dtype=torch.uint8).expand(b, n, 3, h, w)
    feats = {lv: torch.stack([s.features[lv] for s in samples]).flatten(0, 1) for lv in samples[0].features}
    return CachedBatch(**{k: getattr(base, k) for k in Batch.__dataclass_fields__}, features=feats)


class CachedFeatureDataset(Dataset):
    """Map-style dataset over a ``FeatureCache``: ``ds[i] -> CachedSample``; ``labels`` and ``levels`` limit
    what is read (the trainer passes the labels and FPN levels its heads need)."""

    def __init__(self, cache: FeatureCache | str | Path, labels: list[str] | None = None,
                 levels: list[str] | None = None) -> None:
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.labels, self.levels = labels, levels

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> CachedSample:
        return self.cache.read(int(i), self.labels, self.levels)

    def label_presence(self, labels: list[str]) -> dict[str, np.ndarray]:
        """``FeatureCache.label_presence``: label -> bool ``[len(self)]`` (the balancing samplers use it)."""
        return self.cache.label_presence(labels)
