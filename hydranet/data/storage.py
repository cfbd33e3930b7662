"""Where shard bytes come from: a local directory (``os.pread``) or any ``fsspec`` URL, streamed by byte range.

``ShardStore(root)`` is the I/O layer under ``ShardDataset`` and ``read_manifest``: ``read_text`` (the
manifest), ``size`` (one stat / HEAD per shard when a dataset opens), ``read_range`` (one sample's bytes),
``open`` (sequential reads for ``verify``). ``root`` is a shard directory given as

- a local path (or ``file://`` URL): bytes come from ``os.pread`` on descriptors kept open per process —
  the fast path, unchanged from a plain directory;
- any other URL fsspec knows: ``s3://bucket/prefix`` (needs ``s3fs``), ``gs://`` (``gcsfs``),
  ``http(s)://host/path`` (aiohttp, in the dependencies), ``memory://`` (tests), ... Each sample is one
  ranged read (``AbstractFileSystem.cat_file(path, start, end)``, an HTTP ``Range`` request), so a dataset
  is streamed, never copied whole, and a DataLoader worker holds one sample's bytes at a time.

``storage_options`` go to fsspec unchanged (e.g. ``{"anon": True}`` for a public bucket). The filesystem is
rebuilt in each process (after a DataLoader fork or unpickling), as async filesystems cannot cross a fork.
Problems raise ``ShardError`` naming the URL or file: a missing protocol package, a missing object, a short
read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from hydranet.data.errors import ShardError

__all__ = ["ShardStore", "is_url"]


def is_url(root: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (those go through fsspec)."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


class ShardStore:
    """Byte access to the files of one shard directory, local or remote (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        text = str(root)
        if text.startswith("file://"):
            text = text[len("file://"):]
        self.remote = is_url(text)
        self.storage_options = dict(storage_options or {})
        if self.remote:
            self.root: str | Path = text.rstrip("/")
        else:
            self.root = Path(text)
        self._fs_obj: Any = None
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()

    # ---- naming ------------------------------------------------------------------------------
    def join(self, name: str) -> str | Path:
        """The file ``name`` in this directory, as a path (local) or URL (remote): what errors name."""
        return f"{self.root}/{name}" if self.remote else Path(self.root) / name

    # ---- filesystem (remote) -----------------------------------------------------------------
    def _fs(self) -> Any:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: nothing of the parent's is ours
            self._fs_obj, self._fds, self._pid = None, {}, os.getpid()
        if self._fs_obj is None:
            import fsspec

            try:
                self._fs_obj, _ = fsspec.core.url_to_fs(str(self.root), skip_instance_cache=True,
                                                        **self.storage_options)
            except ImportError as e:  # e.g. s3:// without s3fs
                raise ShardError(f"cannot open this URL: {e}", self.root) from e
            except (ValueError, TypeError) as e:
                raise ShardError(f"cannot open this URL ({type(e).__name__}: {e})", self.root) from e
        return self._fs_obj

    def _remote_path(self, name: str) -> str:
        # url_to_fs strips the protocol for most filesystems but http(s) keeps full URLs: ask the fs.
        return self._fs()._strip_protocol(f"{self.root}/{name}")

    # ---- reads ---------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        """Whether file ``name`` exists in the directory (False too when a remote store cannot be reached)."""
        if not self.remote:
            return (Path(self.root) / name).is_file()
        try:
            return bool(self._fs().exists(self._remote_path(name)))
        except OSError:
            return False

    def size(self, name: str) -> int | None:
        """Size in bytes, or None when the file does not exist."""
        if not self.remote:
            path = Path(self.root) / name
            return path.stat().st_size if path.is_file() else None
        try:
            info = self._fs().info(self._remote_path(name))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ShardError(f"cannot stat ({type(e).__name__}: {e})", self.join(name)) from e
        size = info.get("size")
        if size is None:
            raise ShardError("the server does not report a size (Content-Length): cannot check or range-read it",
                             self.join(name))
        return int(size)

    def read_text(self, name: str) -> str:
        """The whole (small) file as UTF-8 text; ``FileNotFoundError`` when absent."""
        if not self.remote:
            return (Path(self.root) / name).read_text()
        try:
            return self._fs().cat_file(self._remote_path(name)).decode("utf-8")
        except FileNotFoundError:
            raise
        except OSError as e:
            raise ShardError(f"cannot read ({type(e).__name__}: {e})", self.join(name)) from e

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``: one ``pread`` (local) or one ranged request (remote)."""
        if not self.remote:
            return os.pread(self._fd(name), length, offset)
        try:
            return self._fs().cat_file(self._remote_path(name), start=offset, end=offset + length)
        except FileNotFoundError as e:
            raise ShardError("shard listed in the manifest is missing", self.join(name)) from e
        except OSError as e:
            raise ShardError(f"range read {offset}..{offset + length} failed ({type(e).__name__}: {e})",
                             self.join(name)) from e

    def open(self, name: str) -> IO[bytes]:
        """A binary file object for sequential reads (``verify``)."""
        if not self.remote:
            return open(Path(self.root) / name, "rb")
        return self._fs().open(self._remote_path(name), "rb", block_size=1 << 22)

    def _fd(self, name: str) -> int:
        if os.getpid() != self._pid:  # forked into a worker: the parent's descriptors are not ours to share
            self._fds, self._fs_obj, self._pid = {}, None, os.getpid()
        fd = self._fds.get(name)
        if fd is None:
            path = Path(self.root) / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise ShardError(f"cannot open shard ({e.strerror})", path) from e
            self._fds[name] = fd
        return fd

    # ---- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the local file descriptors opened by this process; the store stays usable (reopens)."""
        if os.getpid() == self._pid:
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fds"], state["_fs_obj"] = {}, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()
