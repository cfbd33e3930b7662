"""Training on clips: consecutive frames of one scene, memory reset per clip, partial labels per frame."""

import numpy as np
import pytest
import torch

from hydranet.checkpoint import load_model
from hydranet.train.clips import ClipBatchSampler, clip_starts, collate_clip, sequence_keys
from hydranet.train.config import ConfigError, config_from_dict
from hydranet.train.run import run_training
from hydranet.train.scheduler import TaskScheduler

WORLD = {"seed": 3, "num_scenes": 2, "frames_per_scene": 5, "drop_labels": {"objects3d": 0.5}}
CONFIG = {
    "data": {"datasets": {"w": {"kind": "world", "frames": 10, "world": WORLD}}},
    "model": {"preset": "tiny", "setup": {"image_size": [64, 128], "grid": {"cell": 2.0}},
              "fusion": {"temporal": {"time_queue": 1, "space_queue": 1}},
              "tasks": {"objects3d": {}, "bev_semantic": {}}},
    "train": {"steps": 2, "batch_size": 1, "warmup_steps": 1, "threads": 1, "log_every": 1,
              "clip": {"length": 3, "burn_in": 1}},
}


def test_clip_starts_stay_inside_each_run_of_consecutive_frames():
    scenes = ["a"] * 5 + ["b"] * 4
    frames = np.array([0, 1, 2, 3, 4, 7, 8, 9, 10])
    starts = clip_starts(scenes, frames, 3)
    assert starts.tolist() == [0, 0, 0, 1, 2, 5, 5, 5, 6]
    with pytest.raises(ValueError, match="scene 'b' has a run of 2"):
        clip_starts(scenes, np.array([0, 1, 2, 3, 4, 7, 8, 20, 21]), 3)


def test_clip_sampler_yields_frame_major_clips_of_one_scene():
    from hydranet.world import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(**(WORLD | {"drop_labels": {}})))
    scenes, frames = sequence_keys(world)
    assert frames.tolist() == [0, 1, 2, 3, 4] * 2 and scenes[4] != scenes[5]
    # A training config's `kind: world` source answers from its world's layout, rendering nothing (before: every
    # frame was rendered once before step 1, minutes for configs/temporal.yaml).
    from hydranet.datasets import open_dataset

    source = open_dataset(CONFIG["data"]["datasets"]["w"])
    source.world._render = None  # rendering a frame here would fail the test
    keys = sequence_keys(source)
    assert keys[0] == scenes and keys[1].tolist() == frames.tolist()
    starts = clip_starts(scenes, frames, 3)
    sched = TaskScheduler({"all": np.arange(10)}, "all", seed=0, num_samples=10)
    batches = list(ClipBatchSampler(sched, 2, 0, 1, 3, starts, 3))
    assert len(batches) == 3
    for idx in batches:
        first = idx[:2]
        assert idx == [s + k for k in range(3) for s in first]
        assert all(scenes[s] == scenes[s + 2] for s in first)
    with pytest.raises(ValueError, match="not 3 consecutive frames"):
        collate_clip([world[0], world[5], world[1], world[6], world[3], world[7]], 3, 0)


@pytest.mark.slow
def test_temporal_model_trains_on_clips_and_bad_clip_config_is_named(tmp_path, capsys):
    with pytest.raises(ConfigError, match="burn_in"):
        config_from_dict(CONFIG | {"train": CONFIG["train"] | {"clip": {"length": 2, "burn_in": 2}}})
    cfg = config_from_dict(CONFIG)
    summary = run_training(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert "video: each sample is a clip of" in capsys.readouterr().err  # the run says what a sample is
    model, _ = load_model(tmp_path / "run")
    assert model.is_temporal
    # The memory's weights were trained (its output conv starts at zero) and are finite.
    assert any(float(p.abs().sum()) > 0 for p in model.fusion.temporal.out.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
