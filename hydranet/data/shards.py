"""WebDataset-layout tar shards of ``Sample``s: ``ShardWriter`` writes them, ``ShardDataset`` reads them.

Layout: ``root/shard-000000.tar, shard-000001.tar, ..., manifest.json``. Each shard is a plain POSIX
(ustar) tar in which one sample is a run of consecutive members ``<key>.<member>`` (``key`` =
9-digit global sample index; members from ``codec.py``), i.e. the WebDataset convention, so
``webdataset.WebDataset`` / ``tar tf`` / any tar tool reads the shards too.

We write the tar ourselves (``tarfile.TarInfo.tobuf`` for headers) rather than through
``tarfile.TarFile`` or ``webdataset.TarWriter`` because we need, per sample, the exact byte range of
its members and a CRC over it for the manifest index, and deterministic headers (mtime 0, uid 0) so
equal data gives equal shards.

Reading: ``ShardDataset`` is map-style: ``ds[i]`` does one ``os.pread`` of the sample's byte range (or, for
shards behind an fsspec URL -- ``s3://``, ``gs://``, ``https://`` -- one ranged read, see ``storage.py``),
checks its CRC32, parses the tar headers in memory and decodes. Any problem -- a truncated or
replaced shard, flipped bytes, a missing member, an undecodable npz/PNG, a manifest that disagrees
with the shard -- raises ``ShardError`` naming the shard file and the sample key.

Atomicity: the shards are written, as they fill, into a hidden sibling of the output directory
(``hydranet.outputs.StagedDirectory``), the manifest last; the whole directory is fsynced and renamed into
place on ``close()``. A failed or interrupted writer leaves the output as it was (an earlier dataset
intact, no directory at all for a first one). A directory without a manifest is not a dataset.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import json
import os
import tarfile
import zlib
from functools import cached_property
from pathlib import Path
from typing import Any

from isal import isal_zlib
from torch.utils.data import Dataset

import hydranet
from hydranet.data.array_codec import CodecError
from hydranet.data.codec import IMAGE_FORMATS, decode_sample, encode_sample, parse_sample_meta
from hydranet.data.labels import task_labels
from hydranet.data.manifest import (
    MANIFEST_NAME,
    ShardError,
    ShardInfo,
    ShardManifest,
    manifest_path,
    read_manifest,
    write_shard_manifest,
)
from hydranet.data.sample import Sample
from hydranet.data.storage import ShardStore, is_url
from hydranet.outputs import StagedDirectory
from hydranet.setup import Setup, rig_of_frame

BLOCK = 512
_END = b"\0" * (2 * BLOCK)  # end-of-archive marker


def recorded_shards(root: Path) -> set[str]:
    """The files a shard dataset in ``root`` records (``manifest.json`` and the shards it lists): what an
    ``--overwrite`` may replace, and nothing else."""
    return {MANIFEST_NAME, *(str(s["name"]) for s in json.loads((root / MANIFEST_NAME).read_text())["shards"])}


def _shard_name(i: int) -> str:
    """File name of shard ``i`` (``shard-000000.tar``, zero-padded so names sort in order)."""
    return f"shard-{i:06d}.tar"


def sample_key(index: int) -> str:
    """Tar member prefix of the ``index``-th written sample (9 digits, zero-padded)."""
    return f"{index:09d}"


def _tar_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uname, info.gname = len(data), 0o644, 0, "", ""
    pad = -len(data) % BLOCK
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * pad


class ShardWriter:
    """Append samples to size-capped shards, then write ``manifest.json`` on ``close()``.

    ``with ShardWriter(root, shard_size=256, setup=source.setup, source={...}) as w:
        for s in samples: w.write(s)``

    ``setup``: the ``hydranet.setup.Setup`` of the frames (one rig; the manifest records it, readers check it).

    ``label_formats``: label -> ``"png"`` for dense uint8 labels stored as viewable grey PNGs.
    ``image_format``: ``"npz"`` (default, fastest to read), ``"jpeg"`` (real camera data) or ``"png"``
    (viewable, shards ~20% smaller, ~1.3x slower to read); see ``codec.py``. Keys are consecutive global
    indices from 0. ``write_encoded`` takes members already produced by ``codec.encode_sample`` (so encoding
    can run in worker processes).

    Where it writes: a ``hydranet.outputs.StagedDirectory`` of ``root`` (a hidden sibling; shards are written
    there as they fill, so memory stays bounded by one shard's byte index), renamed to ``root`` by ``close()``
    once the manifest is written. An existing non-empty ``root`` is refused (``OutputError``, before anything
    is written) unless ``overwrite``, which replaces only a shard dataset (a directory holding
    ``manifest.json``), and only then. If the block raises (Ctrl-C included) or ``close()`` fails, the stage
    is deleted and ``root`` is left as it was; a full disk raises ``OutputWriteError`` naming the file under
    ``root``. ``staged=False``: ``root`` is an empty directory the caller stages itself (``label`` adds
    ``labels.jsonl`` beside the shards inside ``hydranet.outputs.staged_directory``); the writer writes
    straight into it and leaves putting it in place, or deleting it, to the caller.
    """

    def __init__(self, root: str | os.PathLike, shard_size: int = 256, *, setup: Setup | None = None,
                 source: dict[str, Any] | None = None, image_format: str = "npz",
                 label_formats: dict[str, str] | None = None,
                 overwrite: bool = False, staged: bool = True):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        self.image_format = image_format
        self.label_formats = dict(label_formats or {})  # label -> "png" for viewable uint8 maps (codec.py)
        self.root = Path(root)
        self._staged: StagedDirectory | None = None
        if staged:
            self._staged = StagedDirectory(self.root, overwrite, MANIFEST_NAME, owned=recorded_shards)
            self.stage = self._staged.path  # the directory being filled
        elif not self.root.is_dir() or any(self.root.iterdir()):
            raise ValueError(f"{root}: staged=False writes into an empty directory its caller stages")
        else:
            self.stage = self.root
        self.shard_size, self.setup, self.source = shard_size, setup, source or {}
        self.shards: list[ShardInfo] = []
        self.count = 0
        self.camera_names: list[str] | None = None
        self.image_size: list[int] | None = None
        self._file = None
        self._hash = hashlib.sha256()
        self._offset = 0
        self._index: list[tuple[str, int, int, int]] = []
        self._labels: dict[str, int] = {}
        self._frames: dict[tuple[str, int], str] = {}  # (scene_id, frame_index) -> key
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)

    def write(self, sample: Sample) -> str:
        """Encode and append one sample; returns its key. Raises ``ShardError`` naming the key if the sample
        cannot be encoded or its rig differs from the first sample's."""
        try:
            members = encode_sample(sample, self.image_format, self.label_formats)
        except CodecError as e:
            raise ShardError(f"cannot encode sample ({sample.scene_id}#{sample.frame_index}): {e}",
                             key=sample_key(self.count)) from e
        return self.write_encoded(members)

    def write_encoded(self, members: list[tuple[str, bytes]]) -> str:
        """Append one sample already encoded as ``[(member name, bytes), ...]`` (``sample.json``
        first, as ``encode_sample`` returns it) and return its key. Raises ``ShardError`` if the writer
        is closed, the metadata does not parse, or the rig/image size differs from the first sample.
        """
        if self._closed:
            raise ShardError("writer is closed", self.root)
        key = sample_key(self.count)
        if not members or members[0][0] != "sample.json":
            raise ShardError("first member must be sample.json", key=key)
        try:  # what the reader would refuse is never written
            meta = parse_sample_meta(members[0][1])
        except CodecError as e:
            raise ShardError(str(e), key=key) from e
        names, size = list(meta.camera_names), list(meta.image_size)
        frame = (getattr(meta, "scene_id", None), getattr(meta, "frame_index", None))
        if frame in self._frames:  # a frame listed twice in a source, or queued twice: never stored twice
            raise ShardError(f"frame {frame[0]}#{frame[1]} is written twice (first as sample "
                             f"{self._frames[frame]}): the source or queue lists it twice", key=key)
        self._frames[frame] = key
        if self.camera_names is None:
            self.camera_names, self.image_size = names, size
        elif names != self.camera_names or size != self.image_size:
            raise ShardError(f"frame {frame[0]}#{frame[1]}: rig differs from the first sample: cameras {names} size "
                             f"{size} vs {self.camera_names} {self.image_size} (convert with --image-size HxW "
                             f"to resize every frame to one size)", key=key)
        blob = b"".join(_tar_member(f"{key}.{name}", data) for name, data in members)
        try:
            if self._file is None:
                self._open_shard()
            self._file.write(blob)
        except OSError as e:  # a full disk: name the shard being written (write() names no file)
            e.filename = e.filename or str(self._shard_path())
            raise
        self._hash.update(blob)
        self._index.append((key, self._offset, len(blob), zlib.crc32(blob)))
        self._offset += len(blob)
        for label in meta.labels:
            self._labels[label] = self._labels.get(label, 0) + 1
        self.count += 1
        if len(self._index) >= self.shard_size:
            self._finish_shard()
        return key

    def close(self) -> ShardManifest:
        """Finish the last shard, write the manifest and put the dataset in place at ``root``; returns the
        manifest. On failure everything written is dropped (``abort``) and the error raised."""
        if self._closed:
            raise ShardError("writer is already closed", self.root)
        try:
            if self._file is not None:
                self._finish_shard()
            if self.count == 0:
                raise ShardError("no samples were written", self.root)
            totals: dict[str, int] = {}
            for s in self.shards:
                for k, v in s.labels.items():
                    totals[k] = totals.get(k, 0) + v
            manifest = ShardManifest(
                generator={"name": "hydranet", "version": hydranet.__version__},
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                source=self.source, setup=self.setup, camera_names=self.camera_names,
                image_size=tuple(self.image_size), num_samples=self.count, labels=dict(sorted(totals.items())),
                tasks=[t for t in task_labels() if t in totals], shards=self.shards,
            )
            write_shard_manifest(self.stage, manifest)
        except BaseException as e:
            self.abort(e)
            raise
        self._closed = True
        if self._staged is not None:
            self._staged.commit()
            self._staged = None  # in place: nothing left for abort() to drop
        return manifest

    def abort(self, error: BaseException | None = None) -> None:
        """Drop what was written: the stage (``root`` stays as it was), or with ``staged=False`` the unfinished
        shard (the caller drops its stage). ``error``: what stopped the writer; a failed write (disk full)
        raises ``OutputWriteError`` naming the file under ``root``."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # the full disk being reported: its buffer cannot be flushed either
                pass
            self._file = None
            self._shard_path().unlink(missing_ok=True)
        self._closed = True
        if self._staged is not None:
            self._staged.abandon(error)

    def _shard_path(self) -> Path:
        """The shard being written (the next one when none is open)."""
        return self.stage / _shard_name(len(self.shards))

    def _open_shard(self) -> None:
        self._file = open(self._shard_path(), "wb")
        self._hash, self._offset, self._index, self._labels = hashlib.sha256(), 0, [], {}

    def _finish_shard(self) -> None:
        # End-of-archive: two zero blocks, padded to tar's 10 KiB record like GNU tar and tarfile.
        tail = _END + b"\0" * (-(self._offset + len(_END)) % tarfile.RECORDSIZE)
        try:
            self._file.write(tail)
            self._file.close()  # flushed: the stage's commit fsyncs every shard
        except OSError as e:
            e.filename = e.filename or str(self._shard_path())
            raise
        self._file = None
        self._hash.update(tail)
        self.shards.append(ShardInfo(name=_shard_name(len(self.shards)), num_samples=len(self._index),
                                     bytes=self._offset + len(tail), sha256=self._hash.hexdigest(),
                                     labels=dict(sorted(self._labels.items())), index=self._index))


def _parse_members(blob: bytes | memoryview, key: str) -> dict[str, bytes]:
    """Split the tar bytes of one sample into ``{member: data}``; every member must belong to ``key``."""
    out: dict[str, bytes] = {}
    names: dict[str, str] = {}  # member -> full tar name, for the error message
    view = memoryview(blob)
    pos = 0
    while pos < len(view):
        name, size = _header(bytes(view[pos:pos + BLOCK]), pos)
        start = pos + BLOCK
        end = start + size
        if end > len(view):
            raise CodecError(f"member '{name}' runs past the sample's byte range")
        stem, _, member = name.rpartition("/")[2].partition(".")
        if stem != key:
            raise CodecError(f"tar member '{name}' belongs to sample '{stem}', not '{key}' "
                             "(manifest index does not match the shard)")
        if member in out:  # e.g. a/000000002.depth.npz and b/000000002.depth.npz: never let the last one win
            raise CodecError(f"tar member '{name}' repeats member '{member}' of sample '{key}' "
                             f"(first as '{names[member]}')")
        out[member], names[member] = bytes(view[start:end]), name
        pos = end + (-size % BLOCK)
    return out


def _header(block: bytes, pos: int) -> tuple[str, int]:
    """(name, size) of a tar header block. Plain ustar regular files (what we write) are parsed directly --
    the caller has already checked a CRC over these bytes; anything else goes through ``tarfile``."""
    if block[257:263] == b"ustar\x00" and block[156:157] in (b"0", b"\x00") and block[345] == 0:
        try:
            return block[:100].split(b"\0", 1)[0].decode(), int(block[124:136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            pass
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        raise CodecError(f"bad tar header at +{pos} ({e})") from e
    if not info.isfile():
        raise CodecError(f"tar member '{info.name}' at +{pos} is not a regular file (type {info.type!r})")
    return info.name, info.size


class ShardDataset(Dataset):
    """Map-style dataset over a shard directory: ``ds[i]`` is the sample with key ``i`` -- identical,
    tensor for tensor, to what was written.

    ``labels``: decode only these labels (None = all stored); skipping unneeded dense labels is the
    cheapest speed-up when training a subset of tasks. Opening reads only the manifest and stats the
    shards (size mismatch = truncated/replaced shard -> ``ShardError``). File handles open lazily per
    process, so the dataset pickles into DataLoader workers.
    """

    def __init__(self, root: str | os.PathLike, labels: list[str] | set[str] | None = None,
                 storage_options: dict[str, Any] | None = None):
        if is_url(root):  # s3://, gs://, http(s)://, memory:// ...: streamed by byte range (storage.py)
            url = str(root).rstrip("/")
            self.store = ShardStore(url.rsplit("/", 1)[0] if url.endswith(".json") else url, storage_options)
        else:
            self.store = ShardStore(manifest_path(str(root).removeprefix("file://")).parent)
        self.root = self.store.root
        self.manifest = read_manifest(root, storage_options)
        self.labels = frozenset(labels) if labels is not None else None
        self.camera_names = tuple(self.manifest.camera_names)
        self._starts: list[int] = []  # first global index of each shard
        n = 0
        for info in self.manifest.shards:
            self._check_shard_file(info)
            self._starts.append(n)
            n += info.num_samples

    @cached_property
    def setup(self) -> Setup:
        """What the frames are: the manifest's ``setup``; for shards written without one (``ShardWriter`` used
        directly) the rig of sample 0 (names, K, T), the manifest's image size, no grid, no vocabulary."""
        if self.manifest.setup is not None:
            return self.manifest.setup
        s = self[0]
        size = tuple(self.manifest.image_size)
        rig = rig_of_frame("shards", s.camera_names, s.intrinsics, s.T_ego_from_cam, [size] * len(s.camera_names))
        return Setup(image_size=size, rigs=(rig,), grid=None, classes={})

    def _check_shard_file(self, info: ShardInfo) -> None:
        path = self.store.join(info.name)
        size = self.store.size(info.name)
        if size is None:
            raise ShardError("shard listed in the manifest is missing", path)
        if size != info.bytes:
            bad = next((k for k, off, length, _ in info.index if off + length > size), None)
            what = "truncated; this is the first incomplete sample" if size < info.bytes else "replaced or appended to"
            raise ShardError(f"shard is {size} bytes but the manifest says {info.bytes}: {what}", path, bad)

    def __len__(self) -> int:
        return self.manifest.num_samples

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, position within the shard) of global ``index``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples in {self.root}")
        shard = bisect.bisect_right(self._starts, index) - 1
        return shard, index - self._starts[shard]

    def read_members(self, index: int) -> tuple[Path | str, str, dict[str, bytes]]:
        """Raw members of one sample after the CRC check (for tools that copy or inspect shards)."""
        shard, j = self.locate(index)
        info = self.manifest.shards[shard]
        path = self.store.join(info.name)
        key, offset, length, crc = info.index[j]
        blob = self.store.read_range(info.name, offset, length)
        if len(blob) != length:
            raise ShardError(f"short read ({len(blob)} of {length} bytes at {offset}): shard truncated", path, key)
        if isal_zlib.crc32(blob) != crc:  # zlib's checksum, computed faster
            raise ShardError(f"CRC32 mismatch over bytes {offset}..{offset + length}: the shard is corrupt", path, key)
        try:
            return path, key, _parse_members(blob, key)
        except CodecError as e:
            raise ShardError(str(e), path, key) from e

    def __getitem__(self, index: int) -> Sample:
        path, key, members = self.read_members(index)
        try:
            sample = decode_sample(members, self.labels)
        except CodecError as e:
            raise ShardError(str(e), path, key) from e
        if sample.camera_names != self.camera_names or list(sample.images.shape[-2:]) != list(self.manifest.image_size):
            raise ShardError(f"sample has cameras {sample.camera_names} at {tuple(sample.images.shape[-2:])}, the "
                             f"manifest says {self.camera_names} at {tuple(self.manifest.image_size)}", path, key)
        return sample

    def verify(self, deep: bool = False, on_bytes: Any = None, on_sample: Any = None) -> None:
        """Check every shard's sha256 against the manifest; with ``deep`` also read and decode every
        sample. ``on_bytes(n)`` / ``on_sample(n)`` report progress. Raises ``ShardError`` at the first fault."""
        for info in self.manifest.shards:
            path = self.store.join(info.name)
            self._check_shard_file(info)
            h = hashlib.sha256()
            with self.store.open(info.name) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            if h.hexdigest() != info.sha256:
                raise ShardError("sha256 differs from the manifest: the shard is corrupt or was replaced", path)
        if deep:
            for i in range(len(self)):
                self[i]
                if on_sample is not None:
                    on_sample(1)

    def close(self) -> None:
        """Close the shard files this process opened (a forked worker leaves its parent's alone)."""
        self.store.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "store", None) is not None:
                self.store.close()
        except Exception:  # interpreter shutdown: module globals may already be gone
            pass

    def __repr__(self) -> str:
        return (f"ShardDataset({str(self.root)!r}, samples={len(self)}, shards={len(self.manifest.shards)}, "
                f"labels={sorted(self.manifest.labels)})")
