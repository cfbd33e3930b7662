"""make_loader / open_dataset: batches with presence masks, reproducible order, DDP slices."""

import pytest
import torch
from data_testkit import assert_same_sample, make_sample
from torch.utils.data import DistributedSampler

from hydranet.data.loaders import EpochSampler, make_loader, set_epoch
from hydranet.data.manifest import ShardManifestError
from hydranet.data.shards import ShardDataset, ShardWriter
from hydranet.datasets import load_world_config, open_dataset
from hydranet.world import WorldConfig


@pytest.fixture
def root(tmp_path):
    with ShardWriter(tmp_path / "data", 4) as w:
        for i in range(10):
            w.write(make_sample(i, drop=("depth", "objects3d") if i % 3 == 0 else ()))
    return tmp_path / "data"


def test_batches_carry_presence_masks_for_partial_labels(root):
    loader = make_loader(ShardDataset(root), batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch.images.shape == (4, 8, 3, 16, 32) and batch.images.dtype == torch.uint8
    assert batch.present["depth"].tolist() == [False, True, True, False]
    assert batch.present["drivable"].all()
    assert batch.labels["depth"].shape == (4, 8, 16, 32)
    assert batch.labels["depth"][0].abs().sum() == 0  # absent dense label: zeros, masked out
    assert batch.labels["objects3d"][0] is None and batch.labels["objects3d"][1]["boxes"].shape[1] == 7
    assert_same_sample(make_sample(1), ShardDataset(root)[1])
    assert batch.frame_index.tolist() == [0, 1, 2, 3]


def order(loader):
    return [int(s) * 4 + int(f) for b in loader for s, f in zip([x[-3:] for x in b.scene_id], b.frame_index,
                                                                  strict=True)]


def test_shuffle_is_reproducible_per_seed_and_epoch(root):
    ds = ShardDataset(root)
    a, b = make_loader(ds, 3, shuffle=True, seed=7), make_loader(ds, 3, shuffle=True, seed=7)
    first = order(a)
    assert first == order(b) and sorted(first) == list(range(10)) and first != list(range(10))
    set_epoch(a, 1)
    assert order(a) != first and sorted(order(a)) == list(range(10))
    assert order(make_loader(ds, 3, shuffle=True, seed=8)) != first
    assert order(make_loader(ds, 3, shuffle=False)) == list(range(10))


def test_workers_give_the_same_batches(root):
    ds = ShardDataset(root)
    serial = order(make_loader(ds, 2, shuffle=True, seed=3))
    parallel = make_loader(ds, 2, shuffle=True, seed=3, num_workers=2)
    assert order(parallel) == serial


def test_distributed_sampler_gives_disjoint_rank_slices(root):
    ds = ShardDataset(root)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        seen.append(order(make_loader(ds, 5, sampler=sampler)))
    assert len(seen[0]) == len(seen[1]) == 5 and sorted(seen[0] + seen[1]) == list(range(10))


def test_epoch_sampler_and_bad_arguments(root):
    s = EpochSampler(range(5), shuffle=True, seed=0)
    assert sorted(s) == list(range(5)) and len(s) == 5
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ShardDataset(root), 0)


def test_open_dataset_specs(root, tmp_path):
    assert isinstance(open_dataset(root), ShardDataset)
    assert len(open_dataset(WorldConfig(num_scenes=2, frames_per_scene=5))) == 10
    assert isinstance(open_dataset(root / "manifest.json"), ShardDataset)
    assert sorted(open_dataset(str(root), labels=["lanes"])[2].labels) == ["lanes"]
    world = open_dataset("synthetic", world={"num_scenes": 2, "frames_per_scene": 2, "setup": {"image_size": [16, 32]}})
    assert len(world) == 4 and world[3].images.shape == (8, 3, 16, 32)
    yaml_path = tmp_path / "synthetic_w.yaml"
    yaml_path.write_text("world:\n  num_scenes: 3\n  frames_per_scene: 2\n")
    assert len(open_dataset(f"synthetic:{yaml_path}")) == 6 and len(open_dataset(yaml_path)) == 6
    with pytest.raises(ShardManifestError, match="no such dataset"):
        open_dataset(tmp_path / "missing")
    yaml_path.write_text("num_scenes: 3\nframes_per_scen: 2\n")
    with pytest.raises(ValueError, match=r"synthetic_w\.yaml: frames_per_scen: unknown field"):
        load_world_config(yaml_path)
