"""`hydranet generate` end to end on a tiny world: shards equal the world, re-runs are cheap, errors are clear."""

import json

import pytest
import yaml
from data_testkit import assert_same_sample
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.data.shards import ShardDataset
from hydranet.world import SyntheticWorld, WorldConfig

TINY = ("setup: {image_size: [16, 32]}\nnum_scenes: 1\nframes_per_scene: 3\n"
        "drop_labels: {depth: 0.5, detection2d: 0.3}\n")
runner = CliRunner()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "world.yaml"
    path.write_text(TINY)
    return path


def gen(out, config, *extra):
    return runner.invoke(app, ["generate", "--out", str(out), "--frames", "5", "--config", str(config),
                               "--shard-size", "2", "--seed", "4", *extra])


def test_generate_writes_the_world_then_is_up_to_date(tmp_path, config):
    out = tmp_path / "data"
    r = gen(out, config)
    assert r.exit_code == 0, r.output
    assert "wrote 5 samples in 3 shards" in r.output
    ds = ShardDataset(out)
    m = ds.manifest
    # 5 frames > 1 scene x 3: num_scenes was raised to 2 and the manifest records the config used.
    cfg = WorldConfig.model_validate(m.source["world_config"])
    assert cfg.num_scenes == 2 and cfg.seed == 4 and m.source["frames"] == 5
    world = SyntheticWorld(cfg)
    for i in range(5):
        assert_same_sample(world[i], ds[i])
    assert m.setup == world.setup
    assert m.labels["drivable"] == 5 and m.labels["depth"] == sum("depth" in world[i].labels for i in range(5))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    r = gen(out, config)
    assert r.exit_code == 0 and "up to date" in r.output
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    r = gen(out, config, "--overwrite")
    assert r.exit_code == 0 and "wrote 5 samples" in r.output
    assert [s.sha256 for s in ShardDataset(out).manifest.shards] == [s.sha256 for s in m.shards]  # reproducible
    r = runner.invoke(app, ["data-info", str(out), "--verify", "--deep"])
    assert r.exit_code == 0 and "every sample decodes" in r.output and "drivable" in r.output


def test_generate_refuses_to_overwrite_a_different_dataset(tmp_path, config):
    out = tmp_path / "data"
    assert gen(out, config).exit_code == 0
    r = runner.invoke(app, ["generate", "--out", str(out), "--frames", "4", "--config", str(config),
                            "--shard-size", "2", "--seed", "4"])
    assert r.exit_code == 2 and "different dataset" in r.output and "frames: 5 there, 4 requested" in r.output
    r = runner.invoke(app, ["generate", "--out", str(out), "--frames", "4", "--config", str(config),
                            "--shard-size", "2", "--seed", "4", "--overwrite"])
    assert r.exit_code == 0 and len(ShardDataset(out)) == 4
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-000000.tar", "shard-000001.tar"]


def test_generate_rebuilds_a_damaged_output(tmp_path, config):
    out = tmp_path / "data"
    assert gen(out, config).exit_code == 0
    (out / "shard-000001.tar").write_bytes(b"")
    r = gen(out, config)
    assert r.exit_code == 0 and "wrote 5 samples" in r.output
    ShardDataset(out).verify(deep=True)


def test_bad_arguments_and_config_fields_are_named(tmp_path, config):
    config.write_text(TINY + "fog: 3.0\n")
    r = gen(tmp_path / "x", config)
    assert r.exit_code == 2 and "fog" in r.output
    config.write_text(TINY + "colour: red\n")
    r = gen(tmp_path / "x", config)
    assert r.exit_code == 2 and "colour" in r.output
    r = gen(tmp_path / "x", tmp_path / "nope.yaml")
    assert r.exit_code == 2 and "nope.yaml" in r.output
    r = runner.invoke(app, ["generate", "--out", str(tmp_path / "x"), "--frames", "0"])
    assert r.exit_code == 2 and "--frames" in r.output
    # Without --frames a world file renders its own scenes x frames (before: "how many frames?", exit 2).
    config.write_text(TINY)
    r = runner.invoke(app, ["generate", "--config", str(config), "--out", str(tmp_path / "own")])
    assert r.exit_code == 0, r.output
    world = yaml.safe_load(TINY)
    assert f"wrote {world['num_scenes'] * world['frames_per_scene']} samples" in r.output
    r = runner.invoke(app, ["data-info", str(tmp_path / "x")])
    assert r.exit_code == 2 and "manifest not found" in r.output


@pytest.mark.slow
def test_parallel_generation_is_byte_identical(tmp_path, config):
    assert gen(tmp_path / "one", config).exit_code == 0
    r = gen(tmp_path / "two", config, "--workers", "2")
    assert r.exit_code == 0, r.output
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
    assert one["shards"] == two["shards"]
