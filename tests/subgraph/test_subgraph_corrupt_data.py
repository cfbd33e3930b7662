"""`hydranet cache-features` on a corrupt shard directory (a truncated shard, overwritten bytes that fail
the CRC32): one ``error:`` line naming the shard (and sample), exit 2, no traceback."""

import json
from pathlib import Path

import pytest
from subgraph_testkit import WORLD

from hydranet.cli import app
from hydranet.world.config import WorldConfig
from hydranet.world.generate import generate


def corrupt_shards(root: Path, how: str) -> Path:
    """Two frames of the test world in one shard, then truncated or with bytes overwritten mid-sample."""
    generate(root, WorldConfig(**WORLD), frames=2, shard_size=2)
    shard = root / "shard-000000.tar"
    if how == "truncated":
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    else:  # same size, so only the per-sample CRC32 catches it
        _, offset, length, _ = json.loads((root / "manifest.json").read_text())["shards"][0]["index"][0]
        with shard.open("r+b") as f:
            f.seek(offset + length // 2)
            f.write(b"\xff" * 64)
    return shard


@pytest.mark.parametrize("how", ["truncated", "crc"])
def test_cache_features_on_a_corrupt_shard_exits_2_naming_it(base, tmp_path, runner, how):
    corrupt_shards(tmp_path / "data", how)
    res = runner.invoke(app, ["cache-features", "--ckpt", str(base), "--data", str(tmp_path / "data"),
                              "--out", str(tmp_path / "cache"), "--device", "cpu"])
    assert res.exit_code == 2, (res.output, res.exception)  # before: ShardError traceback, exit 1
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert "error: " in res.output and "shard-000000.tar" in res.output and "[red]" not in res.output
    if how == "crc":
        assert "CRC32" in res.output and "000000000" in res.output  # the sample key
