"""The world renders nuScenes' extra classes (buses, two-wheelers, barriers) when the setup's vocabulary names
them, from a random stream of their own: every other agent, pose and id stays what the world's own vocabulary
gives, and the labels number classes in the setup's vocabulary."""

import torch

from hydranet.data.sample import BEV_CLASSES
from hydranet.setup import NUSCENES_CLASSES, OBJECT_CLASSES
from hydranet.world import SyntheticWorld, WorldConfig
from hydranet.world.scene import generate_scene

H, W = 32, 64
SCENES = {"seed": 5, "num_scenes": 8, "frames_per_scene": 1, "traffic_density": 2.0, "layout": "intersection"}


def world(classes: str | None = None) -> SyntheticWorld:
    setup = {"image_size": [H, W]} | ({"classes": {"objects3d": classes, "detection2d": classes}} if classes else {})
    return SyntheticWorld(WorldConfig(**SCENES, setup=setup))


def test_the_extra_classes_come_only_with_a_vocabulary_that_names_them():
    plain, nusc = world(), world("nuscenes")
    kinds_plain, kinds_nusc = set(), set()
    for i in range(len(plain)):
        a = generate_scene(plain.config, i).agents
        b = generate_scene(nusc.config, i).agents
        kinds_plain |= {x.kind for x in a}
        kinds_nusc |= {x.kind for x in b}
        # every draw of the scene is the same: ids and motions agree, only kinds (and shapes) may differ
        assert [x.track_id for x in a] == [x.track_id for x in b[:len(a)]]
        assert all(x.motion == y.motion for x, y in zip(a, b, strict=False))
        assert all(x.kind == y.kind or (x.kind, y.kind) in {("truck", "bus"), ("car", "bicycle"),
                                                             ("car", "motorcycle")} for x, y in zip(a, b, strict=False))
        assert all(y.kind == "barrier" for y in b[len(a):])  # added last
    assert kinds_plain <= set(OBJECT_CLASSES)
    assert {"bus", "bicycle", "motorcycle", "barrier"} <= kinds_nusc


def test_labels_are_in_the_setups_vocabulary():
    plain, nusc = world(), world("nuscenes")
    seen = set()
    for i in range(len(nusc)):
        s = nusc[i]
        names = [NUSCENES_CLASSES[c] for c in s.labels["objects3d"]["classes"].tolist()]
        seen |= set(names)
        assert "traffic_light" not in names  # not a nuScenes class: lights keep their own label, the same as ever
        assert set(s.labels["detection2d"]["classes"].tolist()) <= set(range(len(NUSCENES_CLASSES)))
        p = plain[i]  # the world's cone is nuScenes' traffic_cone; the same cones in both
        n_cones = int((p.labels["objects3d"]["classes"] == OBJECT_CLASSES.index("cone")).sum())
        assert names.count("traffic_cone") == n_cones
        assert torch.equal(s.labels["traffic_light"]["state"], p.labels["traffic_light"]["state"])
    assert {"car", "truck", "bus", "pedestrian", "bicycle", "motorcycle", "barrier", "traffic_cone"} <= seen


def test_a_bus_is_a_vehicle_in_the_bev_map():
    nusc = world("nuscenes")
    grid = nusc.setup.grid
    for i in range(len(nusc)):
        s = nusc[i]
        o = s.labels["objects3d"]
        bus = o["classes"] == NUSCENES_CLASSES.index("bus")
        for x, y in o["boxes"][bus][:, :2].tolist():
            r, c, inside = grid.cell_indices(torch.tensor([x]), torch.tensor([y]))
            if bool(inside):
                assert s.labels["bev_semantic"][BEV_CLASSES.index("vehicle"), int(r), int(c)] == 1
                return
    raise AssertionError("no bus on the grid in 8 scenes")
