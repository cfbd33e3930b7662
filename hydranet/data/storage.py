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
read. Every remote request has a deadline and a bounded number of tries (``hydranet.limits.net_timeout_s``
and ``net_retries``, set by ``HYDRANET_NET_TIMEOUT_S`` / ``HYDRANET_NET_RETRIES``); a server that does not
answer, breaks off its answer or ignores the ``Range`` of a ranged read ends in one ``NetworkError`` line
naming the URL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from hydranet.data.errors import NetworkError, ShardError
from hydranet.limits import net_retries, net_timeout_s

T = TypeVar("T")



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

            options = dict(self.storage_options)
            if str(self.root).split("://")[0] in ("http", "https"):  # aiohttp waits forever unless told not to
                options["client_kwargs"] = {"timeout": _http_timeout(), **options.get("client_kwargs", {})}
            try:
                self._fs_obj, _ = fsspec.core.url_to_fs(str(self.root), skip_instance_cache=True, **options)
            except ImportError as e:  # e.g. s3:// without s3fs
                raise ShardError(f"cannot open this URL: {e}", self.root) from e
            except (ValueError, TypeError) as e:
                raise ShardError(f"cannot open this URL ({type(e).__name__}: {e})", self.root) from e
        return self._fs_obj

    def _remote_path(self, name: str) -> str:
        # url_to_fs strips the protocol for most filesystems but http(s) keeps full URLs: ask the fs.
        return self._fs()._strip_protocol(f"{self.root}/{name}")

    def _remote(self, what: str, name: str, call: Callable[[], T]) -> T:
        """``call()`` with bounded retries of transient failures (no answer in time, connection lost, answer
        broken off, HTTP 5xx); ``FileNotFoundError`` passes through; anything else ends in ``NetworkError``
        naming the URL, what was asked and why it failed."""
        tries = net_retries()
        for attempt in range(1, tries + 1):
            try:
                return call()
            except FileNotFoundError:
                raise
            except Exception as e:  # aiohttp/fsspec/botocore error types, not all OSError
                transient, why = _classify(e)
                if not transient or attempt == tries:
                    raise NetworkError(f"{what} failed{f' after {attempt} tries' if attempt > 1 else ''}: {why}",
                                       self.join(name)) from None
                time.sleep(min(2.0, 0.25 * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- reads ---------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        """Whether file ``name`` exists in the directory (False too when a remote store cannot be reached)."""
        if not self.remote:
            return (Path(self.root) / name).is_file()
        try:
            return bool(self._remote("existence check", name, lambda: self._fs().exists(self._remote_path(name))))
        except NetworkError:
            return False

    def size(self, name: str) -> int | None:
        """Size in bytes, or None when the file does not exist."""
        if not self.remote:
            path = Path(self.root) / name
            return path.stat().st_size if path.is_file() else None
        try:
            info = self._remote("size query", name, lambda: self._fs().info(self._remote_path(name)))
        except FileNotFoundError:
            return None
        size = info.get("size")
        if size is None:
            raise ShardError("the server does not report a size (Content-Length): cannot check or range-read it",
                             self.join(name))
        return int(size)

    def read_text(self, name: str) -> str:
        """The whole (small) file as UTF-8 text; ``FileNotFoundError`` when absent."""
        if not self.remote:
            return (Path(self.root) / name).read_text()
        data = self._remote("read", name, lambda: self._fs().cat_file(self._remote_path(name)))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ShardError(f"not UTF-8 text ({e})", self.join(name)) from None

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``: one ``pread`` (local) or one ranged request (remote)."""
        if not self.remote:
            return os.pread(self._fd(name), length, offset)
        what = f"range read of bytes {offset}..{offset + length}"
        try:
            data = self._remote(what, name, lambda: self._fs().cat_file(self._remote_path(name), start=offset,
                                                                        end=offset + length))
        except FileNotFoundError as e:
            raise ShardError("shard listed in the manifest is missing", self.join(name)) from e
        if len(data) > length:  # a 200 with the whole file instead of a 206 with the range
            raise NetworkError(f"{what}: the server ignored the Range header and sent {len(data):,} bytes for "
                               f"{length:,}; serve the shards from a server that supports ranged reads (HTTP 206) "
                               "or copy them to a local directory", self.join(name))
        return data

    def open(self, name: str) -> IO[bytes]:
        """A binary file object for sequential reads (``verify``)."""
        if not self.remote:
            return open(Path(self.root) / name, "rb")
        fs = self._fs()
        # http(s): one streamed GET (no Range needed); other stores: 4 MiB blocks
        block = 0 if str(self.root).split("://")[0] in ("http", "https") else 1 << 22
        f = self._remote("open", name, lambda: fs.open(self._remote_path(name), "rb", block_size=block))
        return _GuardedFile(f, self, name)  # type: ignore[return-value]

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


class _GuardedFile:
    """A remote file whose ``read`` has the store's deadline and turns failures into ``NetworkError``."""

    def __init__(self, f: Any, store: ShardStore, name: str):
        self._f, self._store, self._name, self._done = f, store, name, 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._f.read(n)
        except Exception as e:  # no retry mid-stream: the bytes so far are already consumed
            raise NetworkError(f"read failed after {self._done:,} bytes: {_classify(e)[1]}",
                               self._store.join(self._name)) from None
        self._done += len(data)
        return data

    def __enter__(self) -> _GuardedFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._f.close()
        except Exception:  # closing a broken stream must not hide the error that broke it
            pass


def _http_timeout() -> Any:
    import aiohttp

    t = net_timeout_s()
    return aiohttp.ClientTimeout(total=None, connect=t, sock_connect=t, sock_read=t)


def _classify(e: BaseException) -> tuple[bool, str]:
    """``(worth retrying, why in words)`` for an exception of a remote request."""
    name = type(e).__name__
    status = getattr(e, "status", None)
    if isinstance(status, int):
        return status >= 500 or status == 429, f"HTTP {status} {getattr(e, 'message', '') or ''}".strip()
    if isinstance(e, TimeoutError) or "Timeout" in name:
        return True, f"no answer within {net_timeout_s():g} s (HYDRANET_NET_TIMEOUT_S)"
    if "Payload" in name or "Disconnected" in name or isinstance(e, ConnectionError | EOFError):
        return True, f"the connection broke off mid-answer ({name}: {e})"
    if "Connect" in name or "Connection" in name or isinstance(e, OSError):
        return True, f"cannot connect ({name}: {e})"
    return False, f"{name}: {e}"
