"""hydranet.viz.rerun_log: a scene written as a Rerun recording is read back with rerun's own dataframe API
and holds every entity and timeline the module promises; without rerun-sdk the error says how to install it."""

from __future__ import annotations

import sys

import pytest

from hydranet.viz.rerun_log import INSTALL_HINT, RerunMissing, SceneRecorder, require_rerun
from hydranet.world import SyntheticWorld
from hydranet.world.config import WorldConfig

rr = pytest.importorskip("rerun")
df = pytest.importorskip("rerun.dataframe")


def _recording(tmp_path, frames: int = 2):
    world = SyntheticWorld(WorldConfig(num_scenes=1, frames_per_scene=frames, setup={"image_size": (48, 96)}, seed=3))
    path = tmp_path / "scene.rrd"
    with SceneRecorder(path) as rec:
        for i in range(frames):
            sample = world[i]
            # The labels stand in for a model's decoded outputs: the prediction side takes the same forms.
            pred = {k: v for k, v in sample.labels.items() if k in ("objects3d", "detection2d", "traffic_light",
                                                                    "drivable", "lanes", "depth", "bev_semantic")}
            rec.log_frame(i, sample, prediction=pred)
    return path, world[0]


def test_recording_holds_cameras_boxes_maps_trajectory_and_timelines(tmp_path):
    path, sample = _recording(tmp_path)
    recording = df.load_recording(str(path))
    schema = recording.schema()
    timelines = {c.name for c in schema.index_columns()}
    assert {"frame", "time"} <= timelines
    components = {(c.entity_path, c.component_name.split(".")[-1]) for c in schema.component_columns()}
    entities = {e for e, _ in components}
    for name in sample.camera_names:
        cam = f"/world/ego/cam/{name}"
        assert (cam, "PinholeProjection") in components and (cam, "Resolution") in components
        assert (cam, "Translation3D") in components  # T_ego_from_cam
        assert (f"{cam}/image", "ImageBuffer") in components
        for side in ("truth", "prediction"):
            for what in ("drivable", "lanes", "depth"):
                assert f"{cam}/image/{side}/{what}" in entities
    for side in ("truth", "prediction"):
        assert f"/world/ego/{side}/boxes3d" in entities and f"/world/ego/{side}/points" in entities
        assert f"/bev/{side}/semantic" in entities
    assert {"/world/ego", "/world/trajectory", "/world/ego/truth/lane_lines", "/world/ego/truth/ego_path"} <= entities
    # One row per frame on the frame timeline for the ego pose.
    table = recording.view(index="frame", contents="/world/ego").select().read_all()
    assert table.column("frame").to_pylist() == [0, 1]


def test_box_labels_use_the_frames_own_vocabulary_and_a_failed_recording_leaves_no_file(tmp_path):
    """Before: boxes were named from the world's five classes, so a nuScenes frame (ten classes) crashed with an
    IndexError -- and the half-written recording stayed under the output's name."""
    from dataclasses import replace

    import torch

    from hydranet.setup import NUSCENES_CLASSES

    world = SyntheticWorld(WorldConfig(num_scenes=1, frames_per_scene=1, setup={"image_size": (48, 96)}, seed=3))
    sample = world[0]
    setup = world.setup.model_copy(update={"classes": {**world.setup.classes, "objects3d": NUSCENES_CLASSES}})
    boxes = dict(sample.labels["objects3d"])
    boxes["classes"] = torch.full_like(torch.as_tensor(boxes["classes"]), NUSCENES_CLASSES.index("barrier"))
    path = tmp_path / "nuscenes.rrd"
    with SceneRecorder(path, setup=setup) as rec:
        rec.log_frame(0, replace(sample, labels={"objects3d": boxes}))
    table = df.load_recording(str(path)).view(index="frame", contents="/world/ego/truth/boxes3d").select().read_all()
    labels = table.column("/world/ego/truth/boxes3d:Text").to_pylist()[0]
    assert labels and set(labels) == {"barrier"}
    failed = tmp_path / "failed.rrd"
    with pytest.raises(RuntimeError, match="cut short"), SceneRecorder(failed) as rec:
        rec.log_frame(0, sample)
        raise RuntimeError("cut short")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nuscenes.rrd"]


def test_missing_rerun_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rerun", None)  # import rerun -> ImportError
    with pytest.raises(RerunMissing) as e:
        require_rerun()
    assert INSTALL_HINT in str(e.value) and "\n" not in str(e.value)
