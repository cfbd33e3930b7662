"""Shard round trip: what ShardDataset reads is, tensor for tensor, what ShardWriter wrote."""

import errno
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
from hydranet.outputs import OutputError, OutputWriteError

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


def tree_bytes(root):
    """Every file under ``root`` with its bytes (a dataset compared byte for byte)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_failed_write_leaves_no_directory_at_all(tmp_path, samples):
    """Before: the output directory was created up front, so a writer that failed after a finished shard left
    ``root/shard-000000.tar`` (and a first failing conversion an empty ``root``) behind."""
    root = tmp_path / "data"
    with pytest.raises(RuntimeError), ShardWriter(root, 4) as w:
        for s in samples[:6]:
            w.write(s)
        assert sorted(p.name for p in w.stage.iterdir()) == ["shard-000000.tar", "shard-000001.tar"]  # streamed
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # no root, no stage beside it
    with pytest.raises(KeyboardInterrupt), ShardWriter(root, 4) as w:
        w.write(samples[0])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ShardError, match="no samples were written"), ShardWriter(root, 4):
        pass
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_the_old_dataset_only_once_the_new_one_is_complete(tmp_path, samples):
    """Before: ``overwrite=True`` deleted the old manifest and shards up front, so a writer that failed left
    an empty directory where a good dataset had been."""
    root = tmp_path / "data"
    write(root, samples)
    old = tree_bytes(root)
    with pytest.raises(OutputError, match="already exists and is not empty; pass --overwrite"):
        ShardWriter(root, 4)
    with pytest.raises(RuntimeError), ShardWriter(root, 4, overwrite=True) as w:
        for s in samples[:5]:
            w.write(s)
        assert tree_bytes(root) == old  # the old dataset is untouched while the new one is written
        raise RuntimeError("interrupted")
    assert tree_bytes(root) == old and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    write(root, samples[:2], overwrite=True)
    assert sorted(tree_bytes(root)) == ["manifest.json", "shard-000000.tar"]  # nothing of the old one left
    assert len(ShardDataset(root)) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_full_disk_keeps_the_old_dataset_and_names_the_shard(tmp_path, samples, monkeypatch):
    root = tmp_path / "data"
    write(root, samples)
    old = tree_bytes(root)
    real_open = open

    def tiny_disk(path, mode="r", *args, **kwargs):  # the second shard does not fit
        if "w" in mode and str(path).endswith("shard-000001.tar"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", tiny_disk)
    with pytest.raises(OutputWriteError) as err, ShardWriter(root, 4, overwrite=True) as w:
        for s in samples:
            w.write(s)
    monkeypatch.undo()
    assert str(err.value) == f"disk full: could not write {root / 'shard-000001.tar'}"
    assert tree_bytes(root) == old and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_overwrite_replaces_only_a_dataset(tmp_path, samples):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds no manifest.json"):
        ShardWriter(notes, 4, overwrite=True)
    assert (notes / "todo.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty, samples[:1])  # an empty directory needs no flag
    assert len(ShardDataset(empty)) == 1
    for own in ("README.txt", "shard-000009.tar"):  # a user's own file, even one named like a shard the manifest
        (empty / own).write_text("mine")             # does not list, is never deleted by a replace
        with pytest.raises(OutputError, match=rf"also holds files this command did not write \({own}\)"):
            ShardWriter(empty, 4, overwrite=True)
        assert (empty / own).is_file() and len(ShardDataset(empty)) == 1
        (empty / own).unlink()


def test_writer_rejects_a_second_rig(tmp_path):
    with pytest.raises(ShardError, match="rig differs"), ShardWriter(tmp_path, 4) as w:
        w.write(make_sample(0))
        w.write(make_sample(1, cams=4))
