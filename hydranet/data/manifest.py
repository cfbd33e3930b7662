"""``manifest.json``: what a shard directory holds, written last and atomically.

A directory is a dataset when it has a manifest; shards without one are an unfinished run. The
manifest records where the data came from (generator version, world config), its layout (rig,
BEV grid, image size), what it contains (per-label counts, per-shard sample counts) and how to find
and trust every byte: each shard's size and sha256, and a per-sample index ``[key, offset, length,
crc32]`` giving the byte range of the sample's tar members, so any sample is read with one
``pread`` and checked with one CRC.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hydranet.geometry import BevGrid, Rig

FORMAT = "hydranet-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Label names that are also task names (the rest -- semantic, instance, ego_path, lane_lines -- are
# auxiliary ground truth). Kept here, not imported from hydranet.tasks: data sits left of tasks.
TASK_LABELS: tuple[str, ...] = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic",
                                "objects3d")


class ShardError(Exception):
    """A shard directory, shard file or sample is missing, corrupt or inconsistent with its manifest.

    ``path`` is the file concerned and ``key`` the sample (None when the problem is not one sample's)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, key: str | None = None):
        self.path = str(path) if path is not None else None
        self.key = key
        where = ", ".join(p for p in (self.path, f"sample {key}" if key is not None else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ManifestError(ShardError):
    """The manifest is missing, unreadable or invalid."""


class ShardInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # file name relative to the manifest's directory
    num_samples: int
    bytes: int
    sha256: str
    labels: dict[str, int]  # label -> samples in this shard carrying it
    index: list[tuple[str, int, int, int]]  # (key, byte offset, byte length, crc32) per sample, in order


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    generator: dict[str, str]  # {"name": "hydranet", "version": ...}
    created: str  # ISO-8601 UTC; informational only
    source: dict[str, Any] = Field(default_factory=dict)  # e.g. {"kind": "synthetic", "world_config": {...}}
    rig: dict[str, Any] | None = None  # Rig.to_dict()
    grid: dict[str, Any] | None = None  # BevGrid.to_dict()
    camera_names: list[str]
    image_size: tuple[int, int]  # (H, W)
    num_samples: int
    labels: dict[str, int]  # label -> samples carrying it, over all shards
    tasks: list[str]  # labels present that are task names
    shards: list[ShardInfo]

    def rig_obj(self):  # -> hydranet.geometry.Rig | None (import here keeps geometry optional for readers)
        return Rig.from_dict(self.rig) if self.rig is not None else None

    def grid_obj(self):
        return BevGrid.from_dict(self.grid) if self.grid is not None else None


def manifest_path(root: str | os.PathLike) -> Path:
    """``root`` may be the shard directory or the manifest file itself."""
    p = Path(root)
    return p if p.suffix == ".json" else p / MANIFEST_NAME


def read_manifest(root: str | os.PathLike) -> Manifest:
    path = manifest_path(root)
    if not path.exists():
        hint = " (directory does not exist)" if not path.parent.exists() else \
            " (no manifest: not a shard directory, or `hydranet generate` did not finish)"
        raise ManifestError(f"manifest not found{hint}", path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"cannot read manifest ({type(e).__name__}: {e})", path) from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ManifestError(f"not a {FORMAT} manifest (format={found!r})", path)
    if raw.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"format_version {raw.get('format_version')} is not supported (this hydranet reads "
                            f"{FORMAT_VERSION})", path)
    try:
        m = Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ManifestError(f"invalid field '{field}': {first['msg']} ({e.error_count()} error(s))", path) from e
    counted = sum(s.num_samples for s in m.shards)
    if counted != m.num_samples or any(len(s.index) != s.num_samples for s in m.shards):
        raise ManifestError(f"num_samples {m.num_samples} disagrees with the shards' counts/indexes ({counted})", path)
    return m


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file in the same directory, fsync, rename: readers see all or nothing."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> Path:
    path = manifest_path(root)
    text = json.dumps(manifest.model_dump(mode="json"), indent=1)
    # One line per innermost list (index rows, matrices): readable without a line per number. JSON strings
    # never hold a raw newline, so the pattern only matches real list layout.
    text = re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    atomic_write_bytes(path, (text + "\n").encode())
    return path


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)
