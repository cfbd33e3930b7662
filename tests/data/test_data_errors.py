"""Bad data gets a ShardError naming the file and the sample, never a traceback from deep inside."""

import json
import re

import pytest
from data_testkit import make_sample

from hydranet.data.codec import encode_sample
from hydranet.data.manifest import ShardManifestError, read_manifest
from hydranet.data.shards import ShardDataset, ShardError, ShardWriter


@pytest.fixture
def root(tmp_path):
    with ShardWriter(tmp_path, 3) as w:
        for i in range(7):
            w.write(make_sample(i))
    return tmp_path


def member_offset(path, key, member):
    """Byte offset of a member's data inside a tar (search its header name)."""
    data = path.read_bytes()
    return data.index(f"{key}.{member}".encode()) + 512


@pytest.mark.parametrize("member", ["cam.wide.npz", "depth.npz", "sample.json", "objects3d.npz"])
def test_flipped_bytes_name_file_and_sample(root, member):
    shard = root / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    at = member_offset(shard, "000000004", member) + 40
    data[at] ^= 0xFF
    shard.write_bytes(bytes(data))
    ds = ShardDataset(root)  # size unchanged: opening succeeds
    ds[3]  # neighbours in the same shard are intact
    ds[5]
    with pytest.raises(ShardError, match="CRC32 mismatch") as e:
        ds[4]
    assert e.value.path == str(shard) and e.value.key == "000000004"
    assert "shard-000001.tar" in str(e.value) and "sample 000000004" in str(e.value)
    with pytest.raises(ShardError, match="sha256"):
        ds.verify()


def test_truncated_shard_names_file_and_first_incomplete_sample(root):
    shard = root / "shard-000002.tar"
    m = read_manifest(root)
    key, offset, length, _ = m.shards[2].index[0]
    shard.write_bytes(shard.read_bytes()[:offset + length // 2])
    with pytest.raises(ShardError, match="truncated") as e:
        ShardDataset(root)
    assert e.value.path == str(shard) and e.value.key == key == "000000006"


def test_missing_manifest_and_missing_directory(tmp_path, root):
    (root / "manifest.json").unlink()
    with pytest.raises(ShardManifestError, match=re.escape(str(root / "manifest.json")) + ".*not found"):
        ShardDataset(root)
    with pytest.raises(ShardManifestError, match="does not exist"):
        ShardDataset(tmp_path / "nowhere")


def test_bad_manifest_names_field(root):
    path = root / "manifest.json"
    meta = json.loads(path.read_text())
    meta["shards"][0]["num_samples"] = "three"
    path.write_text(json.dumps(meta))
    with pytest.raises(ShardManifestError, match=r"shards\.0\.num_samples"):
        ShardDataset(root)
    path.write_text("{not json")
    with pytest.raises(ShardManifestError, match="cannot read manifest"):
        ShardDataset(root)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ShardManifestError, match="not a hydranet-shards manifest"):
        ShardDataset(root)


def test_manifest_shard_mismatch(root):
    path = root / "manifest.json"
    meta = json.loads(path.read_text())
    # Swap the keys of samples 1 and 2: each index entry now expects the other key's tar members.
    index = meta["shards"][0]["index"]
    index[1][0], index[2][0] = index[2][0], index[1][0]
    path.write_text(json.dumps(meta))
    with pytest.raises(ShardError, match="belongs to sample '000000001', not '000000002'") as e:
        ShardDataset(root)[1]
    assert e.value.key == "000000002" and e.value.path.endswith("shard-000000.tar")
    (root / "shard-000001.tar").unlink()
    with pytest.raises(ShardError, match="missing") as e:
        ShardDataset(root)
    assert e.value.path.endswith("shard-000001.tar")


def test_missing_member_and_bad_npz(tmp_path):
    good = make_sample(0)
    broken = [(n, d) for n, d in encode_sample(good) if n != "lanes.npz"]  # sample.json still lists lanes
    bad_npz = [(n, b"PK\x03\x04garbage" if n == "depth.npz" else d) for n, d in encode_sample(make_sample(1))]
    with ShardWriter(tmp_path, 8) as w:
        w.write_encoded(broken)
        w.write_encoded(bad_npz)
    ds = ShardDataset(tmp_path)
    with pytest.raises(ShardError, match="member 'lanes.npz' is missing") as e:
        ds[0]
    assert e.value.key == "000000000" and "shard-000000.tar" in str(e.value)
    with pytest.raises(ShardError, match="member 'depth.npz' cannot be decoded") as e:
        ds[1]
    assert e.value.key == "000000001"
    assert sorted(ShardDataset(tmp_path, labels=["drivable"])[0].labels) == ["drivable"]  # skipped labels aren't read
