"""The Setup (rigs, image size, BEV grid, class vocabularies) is declared once and carried from data to the
exported graph; ``hydranet.setup.check_fits`` is the one data-vs-model check, refusing a data image size,
rig, grid or vocabulary the model was not built for in train, train --from, cache-features, eval and
generate, naming both values; no head resamples its logits to another grid; unknown tasks and non-finite
labels are named."""

import json
import math
import re

import pytest
import torch
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from hydranet.checkpoint import save_checkpoint
from hydranet.cli import app
from hydranet.geometry import BevGrid, invert_transform, project, transform_points
from hydranet.model import ModelConfig, create_model
from hydranet.setup import (
    NUSCENES_CLASSES,
    OBJECT_CLASSES,
    Camera,
    Rig,
    Setup,
    SetupMismatchError,
    check_fits,
    default_rig,
)
from hydranet.train.config import ConfigError, config_from_dict
from hydranet.train.data import world_config

WORLD = {"seed": 3, "num_scenes": 1, "frames_per_scene": 2}
SETUP = {"image_size": [64, 128], "grid": {"cell": 2.0}}
MODEL = {"preset": "tiny", "setup": SETUP, "tasks": {"drivable": {}, "bev_semantic": {}}}
ONE_CAMERA = {"front": [{"name": "front", "hfov_deg": 90, "position": [1, 0, 1.5], "yaw_deg": 0, "pitch_deg": 0}]}


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
    root = tmp_path_factory.mktemp("setup") / "run" / "checkpoints"
    save_checkpoint(root / "step_00000001", model, {"model_config": cfg.resolved_model().model_dump(mode="json"),
                                                    "config": cfg.model_dump(mode="json"), "step": 1})
    return root.parent


# ---- the Setup itself -------------------------------------------------------------------------------------


def _cam_sees(rig: Rig, name: str, point_ego: tuple[float, float, float]) -> bool:
    i = rig.names.index(name)
    T = invert_transform(rig.extrinsics()[i].double())
    pc = transform_points(T, torch.tensor([point_ego], dtype=torch.float64))
    _, valid = project(pc, rig.intrinsics()[i].double(), tuple(rig.cameras[i].image_size))
    return bool(valid[0])


def test_default_rig_poses_are_sane():
    rig = default_rig()
    assert rig.names == ("main", "narrow", "wide", "left_pillar", "right_pillar", "left_repeater", "right_repeater",
                         "rear")
    T = rig.extrinsics().double()
    fwd = T[:, :3, 2]  # optical axis in ego axes
    heading = {n: math.degrees(math.atan2(float(f[1]), float(f[0]))) for n, f in zip(rig.names, fwd, strict=True)}
    for name in ("main", "narrow", "wide"):
        assert abs(heading[name]) < 1.0 and fwd[rig.names.index(name), 2] < 0  # ahead, slightly down
    assert heading["left_pillar"] > 30 and heading["right_pillar"] < -30
    assert heading["left_repeater"] > 100 and heading["right_repeater"] < -100
    assert abs(abs(heading["rear"]) - 180) < 1.0
    assert (T[:, 2, 3] > 0.5).all() and (T[:, 2, 3] < 2.0).all()  # mounted on the car body
    # The road ahead is in the forward cameras (below the horizon), the road behind in the rear one.
    for name in ("main", "narrow", "wide"):
        assert _cam_sees(rig, name, (30.0, 0.0, 0.0))
        assert not _cam_sees(rig, name, (-30.0, 0.0, 0.0))
    assert _cam_sees(rig, "rear", (-20.0, 0.0, 0.0)) and not _cam_sees(rig, "rear", (20.0, 0.0, 0.0))
    assert _cam_sees(rig, "left_pillar", (8.0, 8.0, 0.0)) and _cam_sees(rig, "right_pillar", (8.0, -8.0, 0.0))
    assert _cam_sees(rig, "left_repeater", (-10.0, 4.0, 0.0)) and _cam_sees(rig, "right_repeater", (-10.0, -4.0, 0.0))
    # Every direction around the car at 15 m is seen by some camera (360 degree coverage).
    for deg in range(0, 360, 10):
        a = math.radians(deg)
        assert any(_cam_sees(rig, n, (15 * math.cos(a), 15 * math.sin(a), 1.0)) for n in rig.names), deg


def test_a_camera_is_explicit_whatever_shorthand_declared_it():
    T = [[0, 0, 1, 1.5], [-1, 0, 0, 0], [0, -1, 0, 1.4], [0, 0, 0, 1]]
    explicit = Camera(name="front", image_size=(720, 1280), fx=1000, fy=990, cx=641.5, cy=355, T_ego_from_cam=T)
    from_k = Camera(name="front", image_size=(720, 1280), K=[[1000, 0, 641.5], [0, 990, 355], [0, 0, 1]],
                    T_ego_from_cam=T)
    from_angles = Camera(name="front", image_size=(720, 1280), fx=1000, fy=990, cx=641.5, cy=355,
                         position=(1.5, 0, 1.4), yaw_deg=0, pitch_deg=0)
    assert explicit == from_k == Camera.model_validate(json.loads(explicit.model_dump_json()))
    assert torch.allclose(from_angles.T(), explicit.T(), atol=1e-12)
    # K at the network input: rescaled per axis from the camera's own size, nothing else changes
    assert torch.allclose(explicit.K((360, 320)), torch.tensor([[250.0, 0, 160.375], [0, 495, 177.5], [0, 0, 1]],
                                                              dtype=torch.float64))
    for bad, match in (({"fx": 0}, "greater than 0"), ({"name": "a/b"}, "may not contain"),
                       ({"K": [[1, 0.1, 0], [0, 1, 0], [0, 0, 1]]}, "not a pinhole K"),
                       ({"T_ego_from_cam": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}, "not a rigid"),
                       ({"cx": 1300}, r"camera 'front': K at its image_size: principal point \(cx, cy\) = "
                                      r"\(1300, 355\) does not lie in the 1280x720"),
                       ({"cy": -1}, "principal point")):
        with pytest.raises(ValueError, match=match):
            Camera.model_validate({**explicit.model_dump(), **bad})
    # The shorthand's fields are checked as fields, not left to fail inside the geometry (a new-user trial:
    # a 2-value position was an internal error, a word for an angle named no field).
    shorthand = {"name": "front", "image_size": (720, 1280), "fx": 1000, "fy": 990, "cx": 641.5, "cy": 355}
    for bad, match in (({"position": (1.5, 0)}, r"position must be \[x, y, z\]"),
                       ({"position": 1.5}, r"position must be \[x, y, z\]"),
                       ({"position": "1.5, 0, 1.4"}, r"position must be \[x, y, z\]"),
                       ({"position": (1.5, 0, "up")}, "position must be a number"),
                       ({"position": (1.5, 0, 1.4), "yaw_deg": "abc"}, "yaw_deg must be a number"),
                       ({"position": (1.5, 0, 1.4), "pitch_deg": float("nan")}, "pitch_deg must be finite")):
        with pytest.raises(ValueError, match=match):
            Camera.model_validate({**shorthand, **bad})


def test_setup_defaults_resolve_once_and_round_trip():
    setup = Setup(image_size=(96, 192), grid={"cell": 1.0})
    assert setup.rig_names() == ["default"] and setup.rig() == default_rig((96, 192))
    assert "rigs" not in setup.model_dump(exclude_unset=True)  # a default rig is not pinned by presets
    assert setup.classes == {"detection2d": OBJECT_CLASSES, "objects3d": OBJECT_CLASSES}
    again = Setup.model_validate(json.loads(setup.model_dump_json()))
    assert again == setup and again.grid == BevGrid(cell=1.0)
    named = Setup(rigs={"a": "default", "b": ONE_CAMERA["front"]}, classes={"objects3d": "nuscenes"})
    assert [len(r) for r in named.rigs] == [8, 1] and named.rig("b").cameras[0].image_size == (128, 256)
    assert named.rig_names() == ["a", "b"] and named.rig("a") == default_rig((128, 256), "a")
    with pytest.raises(ValueError, match=r"rigs: names must be unique, repeated: \['a'\]"):
        Setup(rigs=["default", {"name": "a", "cameras": "default"}, {"name": "a", "cameras": "default"}])
    assert named.vocabulary("objects3d") == NUSCENES_CLASSES and named.camera_counts() == (8, 1)
    with pytest.raises(KeyError, match=r"no rig 'c' in the setup \(rigs: \['a', 'b'\]\)"):
        named.rig("c")
    with pytest.raises(ValueError, match="unknown vocabulary 'kitti'"):
        Setup(classes={"objects3d": "kitti"})


def test_every_mismatch_names_both_values():
    model = Setup.model_validate(SETUP)
    data = model.model_copy()
    check_fits(data, model, "d")  # agrees: no error
    with pytest.raises(SetupMismatchError, match=r"d: images are 32x128 .* built for 64x128 \(setup.image_size\)"):
        check_fits(data.model_copy(update={"image_size": (32, 128)}), model, "d")
    one = Setup(image_size=(64, 128), rigs={"front": ONE_CAMERA["front"]})
    with pytest.raises(SetupMismatchError, match=r"d: rig 'front' has 1 cameras \['front'\] but the model takes the "
                                                 r"rigs default: \['main'"):
        check_fits(one, model, "d")
    other_grid = data.model_copy(update={"grid": BevGrid(cell=1.0)})
    with pytest.raises(SetupMismatchError, match=r"cell 1.0 m \(64x64\) but the model uses .*cell 2.0 m \(32x32\) "
                                                 r"\(setup.grid\): the labels of bev_semantic lie on the grid; "
                                                 r"convert"):
        check_fits(other_grid, model, "d", grid_tasks=["bev_semantic"], remedy="convert")
    check_fits(other_grid, model, "d")  # no task whose labels lie on the grid (objects3d's boxes are in metres)
    check_fits(data.model_copy(update={"grid": None}), model, "d")  # data without BEV labels
    nusc = data.model_copy(update={"classes": {"objects3d": NUSCENES_CLASSES}})
    with pytest.raises(SetupMismatchError, match=r"objects3d classes are \['car', 'truck', 'bus'.* but the model's "
                                                 r"are \['car', 'truck', 'pedestrian'.*\(setup.classes.objects3d\)"):
        check_fits(nusc, model, "d", labels=["objects3d"])
    check_fits(nusc, model, "d", labels=["drivable"])  # labels the model does not learn are not compared


def test_the_model_config_carries_the_setup_and_rejects_what_cannot_work():
    cfg = ModelConfig.preset("tiny", setup={"image_size": (64, 128), "grid": {"cell": 2.0}, "rigs": ONE_CAMERA,
                                            "classes": {"objects3d": "nuscenes"}}, tasks={"objects3d": {}})
    model = create_model(cfg)
    assert model.setup is cfg.setup and model.task_objects["objects3d"].classes == NUSCENES_CLASSES
    assert model.heads["objects3d"].head.branches["heatmap"][-1].out_channels == 10  # one heatmap per class
    assert ModelConfig.preset("base").setup.image_size == (256, 512)
    with pytest.raises(ValueError, match="too small for the network: H and W must be at least 32 pixels"):
        ModelConfig.preset("tiny", setup={"image_size": (16, 64)})
    with pytest.raises(ValueError, match="a model needs a BEV grid"):
        ModelConfig.preset("tiny", setup={"grid": None})


# ---- the one check in every command ------------------------------------------------------------------------


@pytest.mark.parametrize("world,expected", [
    ({"setup": {**SETUP, "image_size": [96, 128]}},
     r"data.datasets.w: images are 96x128 \(HxW\) but the model is built for 64x128"),
    ({"setup": {**SETUP, "grid": {"cell": 1.0}}},
     r"data.datasets.w: BEV grid is .*cell 1.0 m .* model uses .*cell 2.0 m"),
])
def test_train_refuses_data_the_model_was_not_built_for(tmp_path, world, expected):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(world)))
    res = CliRunner().invoke(app, ["train", "-c", str(path), "-o", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2, res.output  # before: 128x256 vs 64x128 failed deep in the fusion, a 1.0 m grid
    assert re.search(expected, " ".join(res.output.split())), res.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_world_datasets_render_the_model_setup_declared_once():
    cfg = config_from_dict(_config())
    world = world_config(cfg)
    assert world.setup == cfg.resolved_model().setup and world.rendered_rig == default_rig((64, 128))
    tree = _config(world={"height": 64})  # the old twin fields are gone: an error naming the field
    with pytest.raises(ConfigError, match=r"data.datasets.w.*height"):
        config_from_dict(tree)


def test_train_from_checkpoint_refuses_mismatched_data(tmp_path, checkpoint):
    res = CliRunner().invoke(app, ["train", "--from", str(checkpoint), "--tasks", "drivable", "--set",
                                   "data.datasets.w.world.setup={image_size: [96, 128], grid: {cell: 2.0}}",
                                   "-o", str(tmp_path / "ft"), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "images are 96x128 (HxW) but the model is built for 64x128" in " ".join(res.output.split())


def test_cache_features_refuses_mismatched_data(tmp_path, checkpoint):
    res = CliRunner().invoke(app, ["cache-features", "--ckpt", str(checkpoint), "--data", "synthetic",
                                   "--world", "setup={image_size: [64, 128], grid: {cell: 1.0}}",
                                   "-o", str(tmp_path / "cache")])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "BEV grid is" in text and "cell 1.0 m" in text and "cell 2.0 m" in text  # before: cached silently
    assert not (tmp_path / "cache").exists()


def test_eval_refuses_a_suite_scenario_the_model_was_not_built_for(tmp_path, checkpoint):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"world": {"num_scenes": 1, "frames_per_scene": 2},
                                     "scenarios": {"one_cam": {"setup": {**SETUP, "rigs": ONE_CAMERA}}},
                                     "seeds": [0, 1], "frames": 1, "tasks": {"drivable": {}}}))
    res = CliRunner().invoke(app, ["eval", str(checkpoint), "--suite", str(suite)])
    assert res.exit_code == 2, res.output
    assert "rig 'front' has 1 cameras ['front'] but model 'model' takes the rigs default:" in " ".join(
        res.output.split())


def test_eval_checks_every_suite_first_and_leaves_out_default_dead_camera_suites_an_own_rig_lacks(tmp_path,
                                                                                                  monkeypatch):
    """A suite that cannot run for the model fails before any suite has run (it used to fail after the ones before
    it, their results lost). From the default ``suites/`` a dead-camera suite for a camera the model's rig does not
    have is left out with a note: an own rig has no 'main' (a new-user trial)."""
    cfg = config_from_dict(_config(model={"setup": {**SETUP, "rigs": ONE_CAMERA}}))
    model = create_model(cfg.resolved_model())
    run = tmp_path / "run" / "checkpoints"
    save_checkpoint(run / "step_00000001", model, {"model_config": cfg.resolved_model().model_dump(mode="json"),
                                                   "config": cfg.model_dump(mode="json"), "step": 1})
    suites = tmp_path / "suites"
    suites.mkdir()
    one = {"world": {"num_scenes": 1, "frames_per_scene": 1}, "scenarios": {"day": {}}, "seeds": [0, 1], "frames": 1,
           "tasks": {"drivable": {}}}
    (suites / "a_plain.yaml").write_text(yaml.safe_dump(one))
    (suites / "b_dead.yaml").write_text(yaml.safe_dump({**one, "dead_cameras": ["main"]}))
    monkeypatch.chdir(tmp_path)
    default = CliRunner().invoke(app, ["eval", str(run.parent)])
    text = " ".join(default.output.split())
    assert default.exit_code in (0, 1), default.output
    assert "skipped suite b_dead" in text and "dead_cameras ['main'] are not cameras of the model's rig ['front']" \
        in text and "suite a_plain" in text
    named = CliRunner().invoke(app, ["eval", str(run.parent), "--suite", "suites"])
    text = " ".join(named.output.split())
    assert named.exit_code == 2 and "dead_cameras: ['main'] are not cameras of the rig ['front']" in text
    assert "suite a_plain" not in text  # refused before the first suite ran


def test_train_names_a_data_rig_it_adds_beside_the_declared_ones():
    """Data of a rig the config does not declare becomes a further rig of the model (how a mixed config takes
    nuScenes' and BDD100K's rigs); beside a declared rig that is said, naming both, since a user's own data whose
    camera names differ from the declared rig's is trained as another rig (a new-user trial)."""
    from hydranet.train.data import resolve_setup, undeclared_rigs

    declared = ModelConfig.preset("tiny", setup={**SETUP, "rigs": ONE_CAMERA}, tasks={"drivable": {}})
    renamed = {"fleet": [{**ONE_CAMERA["front"][0], "name": "cam_front"}]}
    data = Setup.model_validate({**SETUP, "rigs": renamed})
    resolved = resolve_setup(declared, {"data.datasets.fleet": data})
    assert [r.name for r in resolved.setup.rigs] == ["front", "fleet"]
    (line,) = undeclared_rigs(declared, resolved)
    assert "rig 'fleet' (cameras ['cam_front'])" in line and "(front: ['front'])" in line and "--rig fleet" in line
    same = Setup.model_validate({**SETUP, "rigs": {"other_name": ONE_CAMERA["front"]}})
    assert undeclared_rigs(declared, resolve_setup(declared, {"data.datasets.w": same})) == []  # the declared rig
    undeclared = ModelConfig.preset("tiny", setup=SETUP, tasks={"drivable": {}})
    assert undeclared_rigs(undeclared, resolve_setup(undeclared, {"data.datasets.fleet": data})) == []
    # No rig declared, data of two rigs: their names come from the data, so they are said (a new-user trial).
    second = Setup.model_validate({**SETUP, "rigs": {"fleet": ONE_CAMERA["front"]}})
    both = resolve_setup(undeclared, {"data.datasets.fleet": data, "data.datasets.fleet2": second})
    (line,) = undeclared_rigs(undeclared, both)
    assert line.startswith("the model takes the 2 rigs of its data: 'fleet' (cameras ['cam_front']); 'fleet2'")


def test_generate_checks_a_training_world_against_its_model(tmp_path):
    cfg = _config(world={"setup": {**SETUP, "grid": {"cell": 4.0}}})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["generate", "-c", str(path), "-o", str(tmp_path / "d")])
    assert res.exit_code == 2, res.output
    assert "BEV grid is x (-32.0, 32.0) m, y (-32.0, 32.0) m, cell 4.0 m" in " ".join(res.output.split())


def test_export_takes_the_rig_from_the_model_never_from_the_training_data(tmp_path, checkpoint):
    # The checkpoint's training config is not read: a world section no version can parse changes nothing.
    state_file = checkpoint / "checkpoints" / "step_00000001" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"]["data"]["datasets"]["w"]["world"] = {"cameras": "unreadable"}
    state_file.write_text(json.dumps(state))
    res = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--tasks", "drivable"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert manifest["setup"]["rigs"] == [default_rig((64, 128)).model_dump(mode="json")]
    res = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "n.onnx"), "--rig", "fleet"])
    assert res.exit_code == 2 and "no rig 'fleet' in the setup (rigs: ['default'])" in res.output, res.output


def test_bev_head_never_resamples_to_another_grid():
    from hydranet.tasks.bev_semantic import logits_on_grid

    logits = torch.zeros(1, 6, 32, 32)
    assert logits_on_grid(logits, (32, 32)) is logits
    with pytest.raises(ValueError, match=r"label grid is \(64, 64\) cells but the model predicts \(32, 32\)"):
        logits_on_grid(logits, (64, 64))  # before: bilinear resample, silently


def test_unknown_task_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError,
                       match=r"<config>: model.tasks.drivabel: unknown task 'drivabel'; registered tasks: \["):
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


def test_a_model_of_several_rigs_exports_the_rig_named(tmp_path):
    cfg = ModelConfig.preset("tiny", setup={**SETUP, "rigs": {"world": "default", **ONE_CAMERA}},
                             tasks={"drivable": {}, "bev_semantic": {}})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", create_model(cfg), {"model_config": cfg.model_dump(mode="json"), "step": 0})
    res = CliRunner().invoke(app, ["export", str(tmp_path / "ck"), "-o", str(tmp_path / "f.onnx"), "--rig", "front",
                                   "--verify", "--verify-frames", "1"])
    assert res.exit_code == 0 and "parity ok" in res.output, res.output  # verified on frames of that rig
    manifest = json.loads((tmp_path / "f.manifest.json").read_text())
    assert [r["name"] for r in manifest["setup"]["rigs"]] == ["front"]
    assert manifest["inputs"][0]["shape"] == [1, 1, 3, 64, 128]
    res = CliRunner().invoke(app, ["export", str(tmp_path / "ck"), "-o", str(tmp_path / "w.onnx"), "--tasks",
                                   "drivable"])  # the first rig: the world's 8 cameras (kept through the checkpoint)
    assert res.exit_code == 0 and json.loads((tmp_path / "w.manifest.json").read_text())["inputs"][0]["shape"][1] == 8


@pytest.mark.parametrize("size", [32, [32], "ab", [96, 192, 3], [True, 64]])
def test_an_image_size_that_is_not_h_w_is_named(size):
    """Before: ``image_size: 32`` was an internal TypeError (the rigs are sized by it before the field is checked),
    ``[32]`` an error blamed on every camera, and ``[true, 64]`` was read as (1, 64)."""
    with pytest.raises(ValidationError, match=r"image_size\n  (Value error, )?expected \[H, W\] \(two pixel counts\)"):
        Setup(image_size=size)


def test_only_tasks_whose_labels_lie_on_the_grid_need_the_models_grid_to_train():
    """objects3d's boxes are in metres, encoded on the model's grid whatever the data's; bev_semantic's map is not."""
    data = Setup(image_size=(64, 128), grid={"cell": 1.0})
    ModelConfig.preset("tiny", setup=SETUP, tasks={"objects3d": {}, "drivable": {}}).check_data(data, "data.x")
    with pytest.raises(SetupMismatchError, match=r"^data.x: BEV grid is .*cell 1.0 m.*\(setup.grid\): the labels of "
                                                 r"bev_semantic lie on the grid; render or convert the data for "
                                                 r"the model's setup.grid$"):
        ModelConfig.preset("tiny", setup=SETUP, tasks={"objects3d": {}, "bev_semantic": {}}).check_data(data, "data.x")
