"""Shards streamed through fsspec URLs: a loopback HTTP server with Range support (127.0.0.1 only, bounded
timeouts) and fsspec's memory filesystem. Each sample must be one ranged read, never a whole-shard copy."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import fsspec
import pytest
import torch
from data_testkit import assert_same_sample, make_sample
from torch.utils.data import DataLoader

from hydranet.data.manifest import ShardError
from hydranet.data.sample import collate
from hydranet.data.shards import ShardDataset, ShardWriter
from hydranet.datasets import open_dataset


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    with ShardWriter(root, shard_size=4) as w:
        for i in range(10):
            w.write(make_sample(i, cams=2))
    return root


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Static files from ``directory`` with single byte ranges (RFC 7233), and a request log."""

    directory: Path
    log: list[tuple[str, str, int]]  # (method, path, bytes sent)

    def _file(self) -> Path | None:
        p = (self.directory / self.path.lstrip("/")).resolve()
        return p if p.is_file() and self.directory in p.parents else None

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        p = self._file()
        if p is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(p.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.log.append(("HEAD", self.path, 0))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        p = self._file()
        if p is None:
            self.send_error(404)
            return
        data = p.read_bytes()
        rng = self.headers.get("Range")
        if rng:
            start, _, end = rng.removeprefix("bytes=").partition("-")
            start, end = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.log.append(("GET", self.path, len(body)))  # before the body: the client may return before we do
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture()
def http_url(shard_dir):
    handler = type("Handler", (_RangeHandler,), {"directory": shard_dir.resolve(), "log": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 10
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_http_shards_stream_by_range(shard_dir, http_url):
    url, log = http_url
    local = ShardDataset(shard_dir)
    remote = open_dataset(url)
    assert isinstance(remote, ShardDataset) and len(remote) == 10
    log.clear()
    for i in (0, 5, 9):
        assert_same_sample(remote[i], local[i])
    sizes = {s.name: s.bytes for s in local.manifest.shards}
    gets = [(p, n) for m, p, n in log if m == "GET"]
    assert len(gets) == 3  # one ranged request per sample
    for path, sent in gets:
        assert sent < sizes[path.lstrip("/")] / 2  # a sample's bytes, never the shard
    remote.verify(deep=True)  # sha256 of every shard, streamed sequentially


def test_http_loader_with_forked_workers(shard_dir, http_url):
    url, _ = http_url
    ds = ShardDataset(url)
    # Forked workers must rebuild the HTTP filesystem (its event loop does not survive a fork); timeout: never hang.
    loader = DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate, timeout=60)
    batches = list(loader)
    assert [len(b) for b in batches] == [5, 5]
    torch.testing.assert_close(batches[1].images[0], ShardDataset(shard_dir)[5].images)


def test_http_errors_name_the_url(shard_dir, http_url):
    url, _ = http_url
    with pytest.raises(ShardError, match=rf"{url}/nothing/manifest.json: manifest not found"):
        ShardDataset(f"{url}/nothing")


def test_memory_filesystem_and_corruption(shard_dir):
    fs = fsspec.filesystem("memory")
    for p in shard_dir.iterdir():
        fs.pipe_file(f"/ds/{p.name}", p.read_bytes())
    try:
        local = ShardDataset(shard_dir)
        remote = ShardDataset("memory://ds")
        assert_same_sample(remote[7], local[7])
        # Flip one byte of sample 6 (shard 1, first sample): its CRC fails, naming the URL and the key.
        info = local.manifest.shards[1]
        blob = bytearray(fs.cat_file("/ds/" + info.name))
        blob[info.index[0][1] + 600] ^= 0xFF
        fs.pipe_file("/ds/" + info.name, bytes(blob))
        with pytest.raises(ShardError, match=r"memory://ds/shard-000001.tar, sample 000000004: CRC32 mismatch"):
            ShardDataset("memory://ds")[4]
        fs.pipe_file("/ds/" + info.name, bytes(blob[:1000]))
        with pytest.raises(ShardError, match=r"memory://ds/shard-000001.tar.*truncated"):
            ShardDataset("memory://ds")
    finally:
        fs.rm("/ds", recursive=True)


def test_file_url_and_missing_protocol_package(shard_dir):
    assert len(ShardDataset(f"file://{shard_dir}")) == 10
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(ShardError, match=r"s3://bucket/ds.*cannot open this URL.*s3fs"):
            ShardDataset("s3://bucket/ds")
