"""Feature cache: exact fp16 round trip of features, labels and geometry across shards; refusal of a
cache made by another trunk; the disk budget; head-only training (and adding a task) from the cache."""

import json

import numpy as np
import pytest
import torch
import yaml
from subgraph_testkit import invoke, outputs

from hydranet.checkpoint import load_checkpoint, load_model, trunk_hash
from hydranet.data.sample import RAGGED_LABELS, collate
from hydranet.model import create_model
from hydranet.train.feature_cache import CachedFeatureDataset, FeatureCache, collate_cached
from hydranet.train.feature_cache_format import MANIFEST, CacheError
from hydranet.train.feature_cache_writer import write_cache
from hydranet.train.subgraph import changed_tensors, needed_levels


def test_cache_round_trip_equals_fp16_of_computed_features(base, cache, frames):
    model, _ = load_model(base)
    fc = FeatureCache(cache)
    assert len(fc) == len(frames) == 5 and [s["frames"] for s in fc.manifest["shards"]] == [3, 2]
    assert fc.trunk_hash == trunk_hash(model) and fc.manifest["bytes"] > 0
    with torch.no_grad():
        feats = model.camera_features(collate(frames).images)
    n = len(fc.camera_names)
    ds = CachedFeatureDataset(fc)
    for i, sample in enumerate(frames):  # frame 3 is the first of the second shard
        got = ds[i]
        for level, x in feats.items():
            assert got.features[level].dtype == torch.float16
            assert torch.equal(got.features[level], x[i * n:(i + 1) * n].half()), (i, level)
        for name in ("intrinsics", "T_ego_from_cam", "T_world_from_ego"):
            assert torch.equal(getattr(got, name), getattr(sample, name))
        assert (got.scene_id, got.frame_index, got.timestamp) == (sample.scene_id, sample.frame_index,
                                                                  sample.timestamp)
        for label in fc.labels:
            assert (label in got.labels) == (label in sample.labels)
            if label not in sample.labels:
                continue
            want, have = sample.labels[label], got.labels[label]
            if label in RAGGED_LABELS:
                assert sorted(have) == sorted(want) and all(torch.equal(have[k], want[k]) for k in want)
            else:
                assert have.dtype == want.dtype and torch.equal(have, want)
    # Training reads only the levels the trained heads (and fusion, for BEV heads) read.
    assert needed_levels(model, ["bev_semantic"]) == ["p3"]
    assert set(needed_levels(model, ["drivable", "depth"])) < set(fc.levels)
    assert sorted(fc.read(2, [], ["p3"]).features) == ["p3"]
    with pytest.raises(CacheError, match="not cached"):
        fc.read(0, [], ["p9"])
    # A cached batch through the heads matches the full model up to the fp16 rounding of the features.
    cb = collate_cached([ds[0], ds[4]])
    assert cb.images.shape == (2, n, 3, 64, 128) and cb.images.stride() == (0,) * 5
    full = outputs(model, collate([frames[0], frames[4]]))
    with torch.no_grad():
        cached = model.forward_features({k: v.float() for k, v in cb.features.items()}, cb.intrinsics,
                                             cb.T_ego_from_cam)
    for task, outs in full.items():
        for key, value in outs.items():
            torch.testing.assert_close(cached[task][key], value, atol=0.05, rtol=0.05)


def test_cache_refused_for_another_trunk(base, other_trunk, cache, runner, tmp_path):
    other = load_checkpoint(other_trunk).state["trunk_hash"]
    mine = load_checkpoint(base).state["trunk_hash"]
    assert other != mine
    with pytest.raises(CacheError) as e:
        FeatureCache(cache).check_trunk(other, "the --from checkpoint")
    assert mine in str(e.value) and other in str(e.value)
    res = invoke(runner, "train", "--from", other_trunk, "--tasks", "drivable", "--from-cache", cache,
                 "-o", tmp_path / "x", "--no-progress")
    assert res.exit_code == 2 and "trunk" in res.output and not (tmp_path / "x" / "checkpoints").exists()


def test_cache_records_its_data_setup_and_refuses_grid_heads_of_another_grid(base, runner, tmp_path):
    """A cache of frames on a 1 m grid for a model on a 2 m grid: its setup is in the manifest, and a head whose
    labels lie on the grid (bev_semantic) is refused before training, naming the grid; old caches are refused."""
    from subgraph_testkit import SCENES, SETUP

    from hydranet.world import SyntheticWorld, WorldConfig

    fine = {**SETUP, "grid": {**SETUP["grid"], "cell": 1.0}}
    world = SyntheticWorld(WorldConfig(**{**SCENES, "frames_per_scene": 2}, setup=fine))
    model, _ = load_model(base)
    out = tmp_path / "fine"
    write_cache(model, [world[0], world[1]], out, trunk_hash=trunk_hash(model), setup=world.setup)
    assert FeatureCache(out).setup == world.setup and FeatureCache(out).setup.grid.cell == 1.0
    res = invoke(runner, "train", "--from", base, "--tasks", "bev_semantic", "--from-cache", out,
                 "-o", tmp_path / "bev", "--no-progress")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "BEV grid is" in text and "bev_semantic" in text, res.output
    assert "without --from-cache" in text and not (tmp_path / "bev" / "checkpoints").exists()
    # cache-features counts only the heads whose labels it stores: bev_semantic's left out, another grid is fine
    world_file = tmp_path / "fine.yaml"
    world_file.write_text(yaml.safe_dump({**SCENES, "frames_per_scene": 2, "setup": fine}))
    res = invoke(runner, "cache-features", "--ckpt", base, "--data", world_file, "-o", tmp_path / "c1")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "bev_semantic" in text and "leave their labels out of --labels" in text, res.output
    res = invoke(runner, "cache-features", "--ckpt", base, "--data", world_file, "-o", tmp_path / "c2",
                 "--labels", "drivable,depth")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "format": "hydranet-feature-cache/1"}))
    # the rebuild command is the whole one: what the cache records, placeholders for what it does not
    labels, levels = ",".join(manifest["labels"]), ",".join(manifest["levels"])
    rebuild = (f"rebuild the cache: `hydranet cache-features --ckpt CHECKPOINT --data DATA --frames 2 "
               f"--labels {labels} --levels {levels} -o {out} --overwrite`")
    with pytest.raises(CacheError, match="format 'hydranet-feature-cache/1'") as e:
        FeatureCache(out)
    assert str(e.value).endswith(rebuild)
    bad = {**manifest, "setup": {**manifest["setup"], "image_size": [0, -3]}}
    (out / MANIFEST).write_text(json.dumps({**bad, "checkpoint": "runs/a", "data": "synthetic", "world": ["seed=5"]}))
    with pytest.raises(CacheError, match=r"cache.json: setup.image_size: .*too small") as e:
        FeatureCache(out)
    assert "input_value" not in str(e.value) and "`hydranet cache-features --ckpt runs/a --data synthetic --world " \
        "seed=5 --frames 2 --labels" in str(e.value)
    for broken in ({k: v for k, v in manifest.items() if k != "setup"}, {**manifest, "trunk_hash": None},
                   {**manifest, "levels": ["p3"]}):
        (out / MANIFEST).write_text(json.dumps(broken))
        with pytest.raises(CacheError) as e:
            FeatureCache(out)
        message = str(e.value)
        assert ("records no 'setup'" in message or "missing or of another type" in message) and \
            message.endswith(rebuild.replace(f" --levels {levels}", "") if broken.get("levels") == ["p3"] else rebuild)


def test_cache_budget_and_bad_input(base, world, frames, cache, tmp_path):
    model, _ = load_model(base)
    out = tmp_path / "big"
    with pytest.raises(CacheError, match="exceeds --max-gb"):
        write_cache(model, frames, out, trunk_hash="x", setup=world.setup, max_gb=1e-6)
    assert not out.exists()  # refused before writing anything
    with pytest.raises(CacheError, match="exists and is not empty"):
        write_cache(model, frames, cache, trunk_hash="x", setup=world.setup)
    with pytest.raises(CacheError, match="unknown label"):
        write_cache(model, frames, tmp_path / "l", trunk_hash="x", setup=world.setup, labels=["nope"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(CacheError, match="corrupt manifest"):
        FeatureCache(broken)
    # Only the levels asked for, and only the labels asked for: a smaller cache.
    small = write_cache(model, frames[:2], tmp_path / "small", trunk_hash="x", setup=world.setup,
                        levels=["p3", "p4", "p5"], labels=["drivable"])
    full = json.loads((cache / MANIFEST).read_text())
    assert small["bytes_per_frame"] < full["bytes_per_frame"] / 2 and small["labels"] == ["drivable"]
    assert not (tmp_path / "small" / "shard_00000" / "feat.p2.npy").exists()


def test_cache_features_renders_the_models_setup_for_a_world_file_without_one(base, runner, tmp_path):
    """A world file that declares no setup renders the checkpoint's (its rig and image size), as train, eval and
    predict open it; before, cache-features rendered the world's default 8 cameras at 128x256 and was refused."""
    from subgraph_testkit import SCENES, SETUP

    world_file = tmp_path / "world.yaml"
    world_file.write_text(yaml.safe_dump({**SCENES, "num_scenes": 1, "frames_per_scene": 2}))
    for spec in (world_file, f"world:{world_file}"):
        out = tmp_path / f"cache{len(str(spec))}"
        res = invoke(runner, "cache-features", "--ckpt", base, "--data", spec, "-o", out)
        assert res.exit_code == 0, res.output
        fc = FeatureCache(out)
        assert len(fc) == 2 and list(fc.camera_names) == [c["name"] for c in SETUP["rigs"]["test"]]


def test_add_task_from_cache_trains_only_the_new_head(base, cache, batch, runner, tmp_path):
    model, _ = load_model(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = outputs(model, batch)
    res = invoke(runner, "train", "--from", base, "--add-task", "lanes", "--from-cache", cache, "-o", tmp_path / "ft",
                 "--no-progress")
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tmp_path / "ft")
    assert ckpt.state["train_tasks"] == ["lanes"] and ckpt.state["step"] == 2
    assert {"trunk", "neck", "fusion", "heads.drivable"} <= set(ckpt.state["frozen"])
    tuned, _ = load_model(tmp_path / "ft")
    after = tuned.state_dict()
    assert changed_tensors(before, after) == []  # every tensor of the base network is bit-identical
    new = sorted(set(after) - set(before))
    assert new and all(k.startswith("heads.lanes.") for k in new)
    out = outputs(tuned, batch)
    for task in ref:
        for key, value in ref[task].items():
            assert torch.equal(out[task][key], value), f"{task}.{key} changed"
    assert out["lanes"]["logits"].shape[:2] == (2, 2)
    # The lanes head did learn: its weights left their initial values (the run seeds its model with train.seed 0).
    torch.manual_seed(0)
    init = create_model(tuned.cfg).state_dict()
    assert any(not torch.equal(init[k], after[k]) for k in new)
    log = [json.loads(line) for line in (tmp_path / "ft" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["task_loss"]["lanes"] for r in log if "task_loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_a_cache_run_that_added_a_task_resumes_with_the_command_it_prints(base, cache, runner, tmp_path):
    """The command a stopped run prints (``train --resume -o RUN --from BASE --from-cache CACHE --tasks T``) resumes
    it: the run's config.yaml holds the added task and --from's checkpoint lacks its head. Before, that command
    read --from's config (no task T) and was refused; so was the start command repeated with --resume."""
    run = tmp_path / "ft"
    res = invoke(runner, "train", "--from", base, "--add-task", "lanes", "--from-cache", cache, "-o", run,
                 "--no-progress")
    assert res.exit_code == 0, res.output
    res = invoke(runner, "train", "--resume", "-o", run, "--from", base, "--from-cache", cache, "--tasks", "lanes",
                 "--set", "train.steps=3", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "resumed at step 2" in res.output and "new heads" not in res.output
    ckpt = load_checkpoint(run)
    assert ckpt.state["step"] == 3 and ckpt.state["train_tasks"] == ["lanes"]
    # The start command repeated with --resume names the task it added: that is the run's task, not a clash.
    res = invoke(runner, "train", "--resume", "--from", base, "--add-task", "lanes", "--from-cache", cache, "-o", run,
                 "--set", "train.steps=4", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "resumed at step 3" in res.output and load_checkpoint(run).state["step"] == 4


def test_resuming_a_finished_cache_run_says_so_and_writes_nothing(base, cache, runner, tmp_path):
    """Before: the resumed run printed its start banner and "final checkpoint", and replaced train_summary.json
    with an empty history; now one line says it is finished, and the run directory is untouched."""
    args = ["train", "--from", base, "--tasks", "drivable", "--from-cache", cache, "-o", tmp_path / "ft",
            "--no-progress"]
    first = invoke(runner, *args)
    assert first.exit_code == 0, first.output
    files = {p: p.read_bytes() for p in (tmp_path / "ft").rglob("*") if p.is_file() and p.name != "run.lock"}
    again = invoke(runner, *args, "--resume")
    assert again.exit_code == 0, again.output
    final = tmp_path / "ft" / "checkpoints" / "step_00000002"
    text = " ".join(again.output.split())
    assert f"already finished at step 2; nothing to do (final checkpoint {final})" in text
    assert "hydranet train" not in text and "resumed at step" not in text
    after = {p: p.read_bytes() for p in (tmp_path / "ft").rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == files


def test_add_task_refuses_missing_label_and_existing_task(base, world, frames, runner, tmp_path):
    model, _ = load_model(base)
    only = tmp_path / "only_drivable"
    write_cache(model, frames[:2], only, trunk_hash=trunk_hash(model), setup=world.setup,
                labels=["drivable"])
    res = invoke(runner, "train", "--from", base, "--add-task", "lanes", "--from-cache", only, "-o", tmp_path / "a",
                 "--no-progress")
    assert res.exit_code == 2 and "does not store the label" in res.output and "lanes" in res.output
    res = invoke(runner, "train", "--from", base, "--add-task", "depth", "--from-cache", only, "-o", tmp_path / "b",
                 "--no-progress")
    assert res.exit_code == 2 and "already has this task" in res.output


def test_cache_features_cli_reports_size_and_speed_and_enforces_budget(base, runner, tmp_path):
    import yaml
    from subgraph_testkit import WORLD

    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump(WORLD))
    res = invoke(runner, "cache-features", "--ckpt", base, "--data", world, "-o", tmp_path / "c", "--frames", 2,
                 "--levels", "p3,p4,p5", "--labels", "drivable,lanes")
    assert res.exit_code == 0, res.output
    assert "MB/frame" in res.output and "frames/s" in res.output and "MB/s" in res.output
    fc = FeatureCache(tmp_path / "c")
    assert len(fc) == 2 and sorted(fc.levels) == ["p3", "p4", "p5"] and fc.labels == ["drivable", "lanes"]
    assert fc.trunk_hash == load_checkpoint(base).state["trunk_hash"]
    assert fc.manifest["frames_per_s"] > 0 and fc.manifest["mb_per_s"] > 0
    res = invoke(runner, "cache-features", "--ckpt", base, "--data", world, "-o", tmp_path / "big", "--max-gb", 1e-6)
    assert res.exit_code == 2 and "exceeds --max-gb" in res.output and not (tmp_path / "big").exists()
    res = invoke(runner, "cache-features", "--ckpt", base, "--data", world, "-o", tmp_path / "c")
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_open_shards_are_bounded(cache, monkeypatch):
    import hydranet.train.feature_cache as fcm

    monkeypatch.setattr(fcm, "MAX_OPEN_SHARDS", 1)
    fc = FeatureCache(cache)
    ref = FeatureCache(cache)
    for i in (0, 4, 1, 3, 2):  # alternate between the two shards
        got, want = fc.read(i), ref.read(i)
        assert len(fc._arrays) == 1
        assert all(torch.equal(got.features[k], want.features[k]) for k in want.features)
        assert got.scene_id == want.scene_id and got.frame_index == want.frame_index
