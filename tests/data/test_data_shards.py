"""Shard round trip: what ShardDataset reads is, tensor for tensor, what ShardWriter wrote."""

import hashlib
import json
import pickle
import random
import tarfile

import pytest
import webdataset  # test dependency (dev extra): a standard reader must read our shards
from data_testkit import assert_same_sample, make_sample

from hydranet.data.manifest import read_manifest
from hydranet.data.shards import ShardDataset, ShardError, ShardWriter

DROPS = [(), ("depth",), ("detection2d", "bev_semantic"), (), ("traffic_light", "lanes", "instance", "ego_path")]


def write(root, samples, shard_size=4, **kw):
    with ShardWriter(root, shard_size, **kw) as w:
        for s in samples:
            w.write(s)
    return read_manifest(root)


@pytest.fixture
def samples():
    return [make_sample(i, drop=DROPS[i % len(DROPS)]) for i in range(11)]


def test_round_trip_bit_exact_with_partial_labels(tmp_path, samples, setup):
    m = write(tmp_path, samples, setup=setup, source={"kind": "test"})
    ds = ShardDataset(tmp_path)
    assert len(ds) == 11 and [s.num_samples for s in m.shards] == [4, 4, 3]
    for i, s in enumerate(samples):
        got = ds[i]
        assert_same_sample(s, got)  # includes: absent labels stay absent
    assert ds[-1].frame_index == samples[-1].frame_index
    # ShardManifest bookkeeping: counts per label, tasks, the setup.
    expected = {k: sum(k in s.labels for s in samples) for k in {k for s in samples for k in s.labels}}
    assert m.labels == dict(sorted(expected.items()))
    assert m.labels["depth"] == 9 and m.labels["traffic_light"] == 9 and m.labels["semantic"] == 11
    assert "depth" in m.tasks and "semantic" not in m.tasks
    assert ds.setup == setup and m.image_size == (16, 32)
    assert sum(s.labels["drivable"] for s in m.shards) == m.labels["drivable"]


def test_random_access_equals_sequential_and_survives_pickling(tmp_path, samples):
    write(tmp_path, samples, shard_size=3)
    ds = ShardDataset(tmp_path)
    sequential = [ds[i] for i in range(len(ds))]
    order = list(range(len(ds)))
    random.Random(0).shuffle(order)
    fresh = ShardDataset(tmp_path)
    for i in order:
        assert_same_sample(sequential[i], fresh[i])
    clone = pickle.loads(pickle.dumps(fresh))  # what DataLoader workers get
    assert_same_sample(sequential[5], clone[5])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_png_images_round_trip(tmp_path, samples):
    write(tmp_path, samples[:3], image_format="png")
    with tarfile.open(tmp_path / "shard-000000.tar") as tf:
        assert "000000001.cam.rear.png" in tf.getnames()
    ds = ShardDataset(tmp_path)
    for i in range(3):
        assert_same_sample(samples[i], ds[i])


def test_label_subset_decodes_only_those(tmp_path, samples):
    write(tmp_path, samples)
    ds = ShardDataset(tmp_path, labels=["depth", "objects3d"])
    assert sorted(ds[0].labels) == ["depth", "objects3d"]
    assert sorted(ds[1].labels) == ["objects3d"]  # sample 1 has no depth


def test_same_samples_give_identical_shards(tmp_path, samples):
    a = write(tmp_path / "a", samples)
    b = write(tmp_path / "b", samples)
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    for s in a.shards:
        assert hashlib.sha256((tmp_path / "a" / s.name).read_bytes()).hexdigest() == s.sha256


def test_shards_are_standard_tars_in_webdataset_layout(tmp_path, samples):
    m = write(tmp_path, samples)
    with tarfile.open(tmp_path / m.shards[0].name) as tf:
        names = tf.getnames()
    assert names[0] == "000000000.sample.json" and "000000000.cam.main.npz" in names
    assert {n.split(".", 1)[0] for n in names} == {f"{i:09d}" for i in range(4)}
    keys = [x["__key__"] for x in webdataset.WebDataset(str(tmp_path / m.shards[1].name), shardshuffle=False)]
    assert keys == [f"{i:09d}" for i in range(4, 8)]
    meta = json.loads((tmp_path / "manifest.json").read_text())
    assert meta["generator"]["name"] == "hydranet" and meta["num_samples"] == 11


def test_failed_write_leaves_no_dataset_and_no_partial_shard(tmp_path, samples):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, 4) as w:
        for s in samples[:6]:
            w.write(s)
        raise RuntimeError("interrupted")
    assert not (tmp_path / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]  # finished shard only, no temp
    with pytest.raises(ShardError, match="manifest not found"):
        ShardDataset(tmp_path)


def test_writer_refuses_to_overwrite_unless_asked(tmp_path, samples):
    write(tmp_path, samples)
    with pytest.raises(ShardError, match="already holds a dataset"):
        ShardWriter(tmp_path, 4)
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, 4, overwrite=True) as w:
        w.write(samples[0])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # old dataset gone, nothing half-written looks valid
    write(tmp_path, samples[:2])
    assert len(ShardDataset(tmp_path)) == 2


def test_writer_rejects_a_second_rig(tmp_path):
    with pytest.raises(ShardError, match="rig differs"), ShardWriter(tmp_path, 4) as w:
        w.write(make_sample(0))
        w.write(make_sample(1, cams=4))
