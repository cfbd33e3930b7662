"""Config, data and model agree or say why not: one check
(``hydranet.compat.check_data_matches_model``) refuses a data grid, image size or camera count the
model was not built for, naming both values, in train, train --from, cache-features, eval and
export; no head resamples its logits to another grid; unknown tasks and non-finite labels are named."""

import math
import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hydranet.checkpoint import save_checkpoint
from hydranet.cli import app
from hydranet.compat import DataLayout, DataMismatchError, check_data_matches_model
from hydranet.geometry import BevGrid
from hydranet.model import ModelConfig, create_model
from hydranet.train.config import ConfigError, config_from_dict

WORLD = {"seed": 3, "num_scenes": 1, "frames_per_scene": 2, "height": 64, "width": 128, "grid": {"cell": 2.0}}
MODEL = {"preset": "tiny", "image_size": [64, 128], "grid": {"cell": 2.0},
         "tasks": {"drivable": {}, "bev_semantic": {}}}


def _config(world: dict | None = None, model: dict | None = None) -> dict:
    return {"data": {"datasets": {"w": {"kind": "world", "frames": 2, "world": {**WORLD, **(world or {})}}}},
            "model": {**MODEL, **(model or {})},
            "train": {"steps": 1, "batch_size": 1, "warmup_steps": 0, "threads": 1}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny model saved with a training config whose data fits it."""
    cfg = config_from_dict(_config())
    torch.manual_seed(0)
    model = create_model(cfg.resolved_model())
    root = tmp_path_factory.mktemp("compat") / "run" / "checkpoints"
    save_checkpoint(root / "step_00000001", model, {"model_config": cfg.resolved_model().model_dump(mode="json"),
                                                    "config": cfg.model_dump(mode="json"), "step": 1})
    return root.parent


def test_every_mismatch_names_both_values():
    cfg = ModelConfig.model_validate({k: v for k, v in MODEL.items() if k != "preset"})
    grid = BevGrid(cell=2.0)
    check_data_matches_model(DataLayout("d", (64, 128), 8, grid), cfg)  # agrees: no error
    with pytest.raises(DataMismatchError, match=r"d: images are 32x128 .* built for 64x128 \(model.image_size\)"):
        check_data_matches_model(DataLayout("d", (32, 128), 8, grid), cfg)
    with pytest.raises(DataMismatchError, match=r"d: frames have 6 cameras but the model accepts 8 \(model"):
        check_data_matches_model(DataLayout("d", (64, 128), 6, grid), cfg)
    with pytest.raises(DataMismatchError, match=r"cell 1.0 m \(64x64\) but the model uses .*cell 2.0 m \(32x32\)"):
        check_data_matches_model(DataLayout("d", (64, 128), 8, BevGrid(cell=1.0)), cfg)
    camera_only = cfg.model_copy(update={"tasks": {"drivable": {}}})
    check_data_matches_model(DataLayout("d", (64, 128), 8, BevGrid(cell=1.0)), camera_only)  # reads no BEV labels


def test_world_and_model_share_one_grid_schema():
    from hydranet.model.config import GridConfig as ModelGrid
    from hydranet.world.config import GridConfig as WorldGrid

    assert ModelGrid is WorldGrid


@pytest.mark.parametrize("world,expected", [
    ({"height": 96}, r"data.datasets.w \(world\): images are 96x128 \(HxW\) but the model is built for 64x128"),
    ({"grid": {"cell": 1.0}}, r"data.datasets.w \(world\): BEV grid is .*cell 1.0 m .* model uses .*cell 2.0 m"),
    ({"cameras": [{"name": "front", "hfov_deg": 90, "position": [1, 0, 1.5], "yaw_deg": 0, "pitch_deg": 0}]},
     r"data.datasets.w \(world\): frames have 1 cameras but the model accepts 8"),
])
def test_train_refuses_data_the_model_was_not_built_for(tmp_path, world, expected):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(world)))
    res = CliRunner().invoke(app, ["train", "-c", str(path), "-o", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2, res.output  # before: 128x256 vs 64x128 failed deep in the fusion, a 1.0 m grid
    assert re.search(expected, " ".join(res.output.split())), res.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_from_checkpoint_refuses_mismatched_data(tmp_path, checkpoint):
    res = CliRunner().invoke(app, ["train", "--from", str(checkpoint), "--tasks", "drivable", "--set",
                                   "data.datasets.w.world.height=96", "-o", str(tmp_path / "ft"), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "images are 96x128 (HxW) but the model is built for 64x128" in " ".join(res.output.split())


def test_cache_features_refuses_mismatched_data(tmp_path, checkpoint):
    res = CliRunner().invoke(app, ["cache-features", "--ckpt", str(checkpoint), "--data", "synthetic",
                                   "--world", "grid={cell: 1.0}", "-o", str(tmp_path / "cache")])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "BEV grid is" in text and "cell 1.0 m" in text and "cell 2.0 m" in text  # before: cached silently
    assert not (tmp_path / "cache").exists()


def test_eval_refuses_a_suite_scenario_the_model_was_not_built_for(tmp_path, checkpoint):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"world": {"num_scenes": 1, "frames_per_scene": 2},
                                     "scenarios": {"one_cam": {"cameras": [{"name": "front", "hfov_deg": 90,
                                                                            "position": [1, 0, 1.5], "yaw_deg": 0,
                                                                            "pitch_deg": 0}]}},
                                     "seeds": [0, 1], "frames": 1, "tasks": {"drivable": {}}}))
    res = CliRunner().invoke(app, ["eval", str(checkpoint), "--suite", str(suite)])
    assert res.exit_code == 2, res.output
    assert "frames have 1 cameras but model 'model' accepts 8" in " ".join(res.output.split())


def test_export_refuses_a_checkpoint_whose_data_does_not_fit_its_model(tmp_path, checkpoint):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    state_file = bad / "checkpoints" / "step_00000001" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"]["data"]["datasets"]["w"]["world"]["width"] = 256
    state_file.write_text(json.dumps(state))
    res = CliRunner().invoke(app, ["export", str(bad), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2, res.output  # before: the rig was silently resized to the model's image size
    assert "images are 64x256 (HxW) but the model is built for 64x128" in " ".join(res.output.split())


def test_bev_head_never_resamples_to_another_grid():
    from hydranet.tasks.bev_semantic import logits_on_grid

    logits = torch.zeros(1, 6, 32, 32)
    assert logits_on_grid(logits, (32, 32)) is logits
    with pytest.raises(ValueError, match=r"label grid is \(64, 64\) cells but the model predicts \(32, 32\)"):
        logits_on_grid(logits, (64, 64))  # before: bilinear resample, silently


def test_unknown_task_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"<config>: model.tasks: unknown task 'drivabel'; registered tasks: \["):
        config_from_dict(_config(model={"tasks": {"drivabel": {}}}))  # before: KeyError when the model was built


def _sample(**labels):
    from hydranet.data.sample import Sample

    n = 2
    return Sample(images=torch.zeros(n, 3, 8, 8, dtype=torch.uint8), intrinsics=torch.eye(3).repeat(n, 1, 1),
                  T_ego_from_cam=torch.eye(4).repeat(n, 1, 1), T_world_from_ego=torch.eye(4), timestamp=0.0,
                  scene_id="s7", camera_names=("a", "b"), frame_index=3, labels=labels)


@pytest.mark.parametrize("field,sample", [
    ("label 'objects3d.boxes'", lambda: _sample(objects3d={"boxes": torch.tensor([[1.0, math.nan, 0, 4, 2, 1.5, 0]]),
                                                             "velocity": torch.zeros(1, 2),
                                                             "classes": torch.zeros(1, dtype=torch.long)})),
    ("label 'objects3d.velocity'", lambda: _sample(objects3d={"boxes": torch.zeros(1, 7),
                                                                "velocity": torch.tensor([[math.inf, 0.0]]),
                                                                "classes": torch.zeros(1, dtype=torch.long)})),
    ("label 'detection2d.boxes'", lambda: _sample(detection2d={"boxes": torch.tensor([[0.0, 0, math.nan, 4]]),
                                                                 "classes": torch.zeros(1, dtype=torch.long),
                                                                 "camera": torch.zeros(1, dtype=torch.long),
                                                                 "visible": torch.ones(1),
                                                                 "track_id": torch.zeros(1, dtype=torch.long)})),
    ("T_world_from_ego", lambda: _sample().__class__(**{**_sample().__dict__,
                                                        "T_world_from_ego": torch.full((4, 4), math.nan)})),
    ("T_ego_from_cam", lambda: _sample().__class__(**{**_sample().__dict__,
                                                      "T_ego_from_cam": torch.full((2, 4, 4), math.inf)})),
])
def test_non_finite_boxes_velocities_and_poses_are_rejected_naming_sample_and_field(tmp_path, field, sample):
    from hydranet.data.manifest import ShardError
    from hydranet.data.shards import ShardWriter

    s = sample()
    # (velocity may be NaN = "unknown" for nuScenes keyframes, never inf)
    with pytest.raises(ValueError, match=rf"sample s7#3: {field} holds (non-finite values|inf)"):
        s.validate()
    with pytest.raises(ShardError, match=rf"s7#3.*{field} holds (non-finite|inf)"):  # before: written to disk
        with ShardWriter(tmp_path / "shards") as w:
            w.write(s)


def test_losses_name_non_finite_targets_instead_of_int_of_nan():
    from hydranet.tasks.centernet2d import encode_boxes2d
    from hydranet.tasks.objects3d import encode_objects3d

    nan_box = torch.tensor([[0.0, 0.0, math.nan, 4.0]])
    one = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="present sample 0: its 2D boxes hold non-finite"):  # before: int(nan)
        encode_boxes2d([(nan_box, one, one, torch.ones(1, dtype=torch.bool))], 1, 1, (4, 4), 4, (16, 16))
    target = {"boxes": torch.tensor([[math.nan, 0, 0, 4, 2, 1.5, 0]]), "classes": one}
    with pytest.raises(ValueError, match="objects3d: present sample 0: 'boxes' holds non-finite"):
        encode_objects3d([target], BevGrid(cell=2.0), (32, 32), 5, 0.1, 2)
