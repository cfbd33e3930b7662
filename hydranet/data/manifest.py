"""``manifest.json``: what a shard directory holds, written last and atomically.

A directory is a dataset when it has a manifest; shards without one are an unfinished run. The
manifest records where the data came from (generator version, world config), its layout (rig,
BEV grid, image size), what it contains (per-label counts, per-shard sample counts) and how to find
and trust every byte: each shard's size and sha256, and a per-sample index ``[key, offset, length,
crc32]`` giving the byte range of the sample's tar members, so any sample is read with one
``pread`` and checked with one CRC.

Every number in it is finite: Python's ``json`` reads ``NaN`` and ``Infinity`` (tokens no JSON writer of
hydranet emits, ``hydranet.json_files``), so the models refuse them (``allow_inf_nan=False``), in the free-form
``source`` record too (JSON values only), and ``read_manifest`` names the file and the field.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from hydranet.config_errors import field_messages
from hydranet.data.errors import ShardError, ShardManifestError  # noqa: F401 - re-exported: data.manifest.ShardError
from hydranet.data.storage import ShardStore, is_url
from hydranet.limits import loads_json
from hydranet.outputs import fsync_path
from hydranet.setup import Setup

FORMAT = "hydranet-shards"
_FORMAT_VERSION = 2  # 2: the Setup (full camera K and rotation, class vocabularies) replaced rig + grid
MANIFEST_NAME = "manifest.json"

# Label names that are also task names (the rest -- semantic, instance, ego_path, lane_lines -- are
# auxiliary ground truth). Kept here, not imported from hydranet.tasks: data sits left of tasks.
_TASK_LABELS: tuple[str, ...] = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic",
                                "objects3d")


def _plain_file_name(name: str) -> str:
    """A shard name is a bare file name inside the dataset directory: no folders, no ``..``, no absolute
    path, no hidden/temp file -- a manifest must never make the reader open a file elsewhere."""
    if (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0")
            or Path(name).is_absolute() or Path(name).name != name):
        raise ValueError(f"shard name {name!r} must be a plain file name inside the dataset directory "
                         "(no '/', '\\', '..', absolute or hidden paths)")
    return name


class ShardInfo(BaseModel):
    """One shard in the manifest: its file ``name``, sample count, size in bytes, sha256, per-label
    counts, and the per-sample index ``(key, offset, length, crc32)``. Validation raises ``ValueError``
    for a name outside the directory or a byte range that is not inside the shard, in order.
    """
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str  # file name relative to the manifest's directory
    num_samples: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    labels: dict[str, int]  # label -> samples in this shard carrying it
    index: list[tuple[str, int, int, int]]  # (key, byte offset, byte length, crc32) per sample, in order

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _plain_file_name(v)

    @model_validator(mode="after")
    def _index_inside_shard(self) -> ShardInfo:
        # Every byte range must lie inside the shard and after the previous one: a negative or past-end
        # offset would otherwise reach os.pread (EINVAL) or read another sample's bytes.
        end = 0
        for i, (key, offset, length, crc) in enumerate(self.index):
            if not key or any(c in key for c in "/.\\\0"):
                raise ValueError(f"index[{i}]: key {key!r} must be non-empty without '/', '.' or '\\'")
            if offset < end or length <= 0 or offset + length > self.bytes:
                raise ValueError(f"index[{i}] (sample {key}): byte range {offset}..{offset + length} is not inside "
                                 f"the shard ({self.bytes} bytes) after the previous sample (ends at {end})")
            if not 0 <= crc < 1 << 32:
                raise ValueError(f"index[{i}] (sample {key}): crc32 {crc} is not a 32-bit unsigned value")
            end = offset + length
        return self


class ShardManifest(BaseModel):
    """The typed ``manifest.json`` of a shard directory (see the module docstring). Validation raises
    ``ValueError`` for a sample key or shard listed twice, or a setup that disagrees with ``camera_names``
    or ``image_size`` (H, W pixels), and any non-finite number (``source`` included: it holds JSON values only);
    ``read_manifest`` turns these into ``ShardManifestError``.
    """
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    format: str = FORMAT
    format_version: int = _FORMAT_VERSION
    generator: dict[str, str]  # {"name": "hydranet", "version": ...}
    created: str  # ISO-8601 UTC; informational only
    source: dict[str, JsonValue] = Field(default_factory=dict)  # e.g. {"kind": "synthetic", "world_config": {...}}
    setup: Setup | None = None  # what the frames are (Source.setup): one rig, image size, grid, classes
    camera_names: list[str]
    image_size: tuple[PositiveInt, PositiveInt]  # (H, W)
    num_samples: int = Field(ge=0)
    labels: dict[str, int]  # label -> samples carrying it, over all shards
    tasks: list[str]  # labels present that are task names
    shards: list[ShardInfo]

    @model_validator(mode="after")
    def _consistent(self) -> ShardManifest:
        seen: set[str] = set()
        for shard in self.shards:
            for key, *_ in shard.index:
                if key in seen:
                    raise ValueError(f"sample key {key!r} is listed more than once in the shards' indexes")
                seen.add(key)
        names = [s.name for s in self.shards]
        if len(set(names)) != len(names):
            raise ValueError(f"a shard is listed more than once: {names}")
        if self.setup is not None:
            if len(self.setup.rigs) != 1:
                raise ValueError(f"setup lists {len(self.setup.rigs)} rigs; a dataset's frames come from one")
            rig_names = list(self.setup.rig().names)
            size = list(self.setup.image_size)
            if rig_names != list(self.camera_names) or size != list(self.image_size):
                raise ValueError(f"setup has cameras {rig_names} at {size[0]}x{size[1]} but camera_names is "
                                 f"{self.camera_names} at {self.image_size[0]}x{self.image_size[1]}")
        return self


def manifest_path(root: str | os.PathLike) -> Path:
    """``root`` may be the shard directory or the manifest file itself."""
    p = Path(root)
    return p if p.suffix == ".json" else p / MANIFEST_NAME


def read_manifest(root: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> ShardManifest:
    """Read and validate ``root``'s manifest; ``root`` may also be an fsspec URL (``s3://``, ``https://``, ...,
    see ``hydranet.data.storage``; ``storage_options`` go to fsspec)."""

    if is_url(root):
        url = str(root).rstrip("/")
        folder, name = url.rsplit("/", 1) if url.endswith(".json") else (url, MANIFEST_NAME)
        store = ShardStore(folder, storage_options)
        path = store.join(name)
        try:
            text = store.read_text(name)
        except FileNotFoundError:
            raise ShardManifestError("manifest not found (no shard directory at this URL, or it is unfinished)",
                                path) from None
        except UnicodeDecodeError as e:
            raise ShardManifestError(f"cannot read manifest ({type(e).__name__}: {e})", path) from e
    else:
        path = manifest_path(str(root).removeprefix("file://"))
        if not path.exists():
            hint = " (directory does not exist)" if not path.parent.exists() else \
                " (no manifest: not a shard directory, or `hydranet generate` did not finish)"
            raise ShardManifestError(f"manifest not found{hint}", path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ShardManifestError(f"cannot read manifest ({type(e).__name__}: {e})", path) from e
    try:
        raw = loads_json(text, str(path), ShardManifestError)
    except json.JSONDecodeError as e:
        raise ShardManifestError(f"cannot read manifest ({type(e).__name__}: {e})", path) from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ShardManifestError(f"not a {FORMAT} manifest (format={found!r})", path)
    if raw.get("format_version") != _FORMAT_VERSION:
        older = " (an older hydranet's rig record has no principal point, roll or per-camera size: regenerate " \
                "it with hydranet generate / hydranet convert)" if raw.get("format_version") == 1 else ""
        raise ShardManifestError(f"format_version {raw.get('format_version')} is not supported (this hydranet reads "
                                 f"{_FORMAT_VERSION}){older}", path)
    try:
        m = ShardManifest.model_validate(raw)
    except ValidationError as e:
        fields = list(field_messages(e).items())  # the user's field names, no pydantic union internals
        problems = "; ".join(f"field '{field or '(manifest)'}': {message}" for field, message in fields[:3])
        more = f" (and {len(fields) - 3} more)" if len(fields) > 3 else ""
        raise ShardManifestError(f"invalid manifest: {problems}{more}", path) from None
    counted = sum(s.num_samples for s in m.shards)
    if counted != m.num_samples or any(len(s.index) != s.num_samples for s in m.shards):
        raise ShardManifestError(f"num_samples {m.num_samples} disagrees with the shards' counts/indexes ({counted})",
                                 path)
    return m


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file in the same directory, fsync, rename: readers see all or nothing.

    The file gets the mode ``open()`` would give it (0666 less the umask, i.e. 0644 usually), like the
    shards beside it; ``mkstemp``'s private 0600 would make a dataset unreadable to its other users."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)  # the rename itself, on disk


def write_shard_manifest(root: str | os.PathLike, manifest: ShardManifest) -> Path:
    """Write ``manifest`` as ``root``'s ``manifest.json`` atomically (see ``_atomic_write_bytes``); returns
    its path. Writers call it last, so a directory with a manifest is a complete dataset.
    """
    path = manifest_path(root)
    text = json.dumps(manifest.model_dump(mode="json"), indent=1)
    # One line per innermost list (index rows, matrices): readable without a line per number. JSON strings
    # never hold a raw newline, so the pattern only matches real list layout.
    text = re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    _atomic_write_bytes(path, (text + "\n").encode())
    return path
