"""Session fixtures of the sub-graph tests: frames rendered once, a base checkpoint, one with another
trunk, the base's feature cache. Small on purpose: no test trains more than two steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from subgraph_testkit import CONFIG, WORLD, make_checkpoint
from typer.testing import CliRunner

from hydranet.data.sample import collate


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: several single-threaded ops beat oversubscription
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def world():
    from hydranet.world import SyntheticWorld, WorldConfig

    return SyntheticWorld(WorldConfig(**WORLD))


@pytest.fixture(scope="session")
def frames(world) -> list:
    return [world[i] for i in range(len(world))]


@pytest.fixture(scope="session")
def batch(frames):
    return collate(frames[:2])


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("base"), seed=0)


@pytest.fixture(scope="session")
def other_trunk(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("other"), seed=1)


@pytest.fixture(scope="session")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="session")
def cache(base, world, frames, tmp_path_factory) -> Path:
    """All 5 frames in shards of 3 (so reads cross a shard boundary)."""
    from hydranet.checkpoint import load_checkpoint, load_model
    from hydranet.train.feature_cache_writer import write_cache

    model, _ = load_model(base)
    out = tmp_path_factory.mktemp("cache") / "c"
    write_cache(model, frames, out, trunk_hash=load_checkpoint(base).state["trunk_hash"], setup=world.setup,
                shard_frames=3,
                batch_size=2)
    return out


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()
