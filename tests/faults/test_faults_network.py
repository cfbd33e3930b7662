"""Class 6 of issue 22: network reads have a deadline, bounded retries and one error line naming the URL.

A hostile HTTP server on 127.0.0.1 (``hostile_http.py``) accepts and never answers, sends half an answer,
or ignores ``Range``. ``hydranet.data.storage.ShardStore`` gives every request ``HYDRANET_NET_TIMEOUT_S``
and ``HYDRANET_NET_RETRIES`` tries, then raises ``NetworkError`` (exit 1) naming the URL and why.
"""

from __future__ import annotations

import time

import pytest
from faults_kit import cli, error_line
from hostile_http import HostileServer

from hydranet.data.errors import NetworkError
from hydranet.data.shards import ShardDataset

TIMEOUT_S, RETRIES = 0.5, 2


@pytest.fixture(autouse=True)
def _short_deadlines(monkeypatch):
    monkeypatch.setenv("HYDRANET_NET_TIMEOUT_S", str(TIMEOUT_S))
    monkeypatch.setenv("HYDRANET_NET_RETRIES", str(RETRIES))


CASES = {
    "silent": ("manifest.json", f"no answer within {TIMEOUT_S:g} s"),
    "half": ("manifest.json", "the connection broke off mid-answer"),
    "norange": ("shard-000000.tar", "the server ignored the Range header"),
}


@pytest.mark.parametrize("mode", list(CASES))
@pytest.mark.parametrize("command", ["data-info", "show"])
def test_a_hostile_server_ends_in_one_line_naming_the_url(dataset, tmp_path, mode, command):
    name, why = CASES[mode]
    with HostileServer(dataset, mode) as url:
        args = ["data-info", url, "--verify"] if command == "data-info" else ["show", "--data", url, "-o",
                                                                                  tmp_path / "s.png"]
        t0 = time.perf_counter()
        res = cli(*args)
        seconds = time.perf_counter() - t0
    if mode == "norange" and command == "data-info":  # a whole-file sha256 needs no Range: it streams
        assert res.exit_code == 0, res.output
        return
    assert res.exit_code == 1, res.output
    line = error_line(res)
    assert f"{url}/{name}" in line and why in line, line
    assert "short read" not in line
    assert seconds < 30  # bounded: RETRIES x TIMEOUT_S plus backoff, never minutes


def test_training_reads_fail_the_same_way(dataset):
    """The DataLoader path (``ShardDataset.__getitem__``: one ranged read per sample) raises NetworkError,
    not aiohttp's ClientPayloadError."""
    with HostileServer(dataset, "honest") as url:
        ds = ShardDataset(url)
        assert ds[1].images.shape[0] == 8
    with HostileServer(dataset, "half") as url:
        with pytest.raises(NetworkError, match=r"broke off mid-answer"):
            ShardDataset(url)
    with HostileServer(dataset, "norange") as url:
        ds = ShardDataset(url)
        with pytest.raises(NetworkError, match=r"ignored the Range header and sent [\d,]+ bytes for"):
            ds[0]


def test_an_honest_server_still_works(dataset, tmp_path):
    with HostileServer(dataset, "honest") as url:
        cli("data-info", url, "--verify", code=0)
        cli("show", "--data", url, "-o", tmp_path / "s.png", code=0)


def test_a_server_that_is_not_there_is_one_line_too(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    res = cli("data-info", f"http://127.0.0.1:{port}/data")
    assert res.exit_code in (1, 2) and f"127.0.0.1:{port}" in error_line(res)
