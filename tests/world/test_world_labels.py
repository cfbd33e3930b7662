"""Ego-frame and camera labels agree with the scene and with each other; partial labels work."""

import functools
import math

import torch

from hydranet.data.sample import BEV_CLASSES, OBJECT_CLASSES, SEMANTIC_CLASSES
from hydranet.geometry import invert_transform, ray_directions, transform_points
from hydranet.world import WORLD_LABELS, SyntheticWorld, WorldConfig

H, W = 48, 96
BEV = {n: i for i, n in enumerate(BEV_CLASSES)}
SEM = {n: i for i, n in enumerate(SEMANTIC_CLASSES)}


@functools.cache
def world(**kw) -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(setup={"image_size": (H, W)}, num_scenes=6, frames_per_scene=10, **kw))


@functools.cache
def sample(i: int, **kw):
    return world(**kw)[i]


def test_every_label_is_written_in_the_contract_format():
    s = sample(3)
    assert set(s.labels) == set(WORLD_LABELS)
    det, obj = s.labels["detection2d"], s.labels["objects3d"]
    assert det["boxes"].dtype == torch.float32 and det["classes"].dtype == torch.int64
    assert len(det["boxes"]) > 0 and len(obj["boxes"]) > 0
    assert s.labels["bev_semantic"].shape == (len(BEV_CLASSES), 128, 128)
    assert s.labels["ego_path"].shape == (30, 3)
    assert s.labels["lane_lines"]["points"].shape[1:] == (32, 3)


def test_2d_boxes_are_tight_around_visible_instance_pixels():
    for i in (2, 14, 26):
        s = sample(i)
        det, inst = s.labels["detection2d"], s.labels["instance"]
        for box, cam, tid, vis in zip(det["boxes"], det["camera"], det["track_id"], det["visible"], strict=True):
            m = inst[cam] == tid
            v, u = m.nonzero().unbind(1)
            assert box.tolist() == [u.min().item(), v.min().item(), u.max().item() + 1, v.max().item() + 1]
            assert 0.0 < vis <= 1.0
            assert m.sum() >= world().config.min_visible_pixels
        # Every object class is one of OBJECT_CLASSES and matches the 3D label of the same track.
        obj = s.labels["objects3d"]
        cls3d = dict(zip(obj["track_id"].tolist(), obj["classes"].tolist(), strict=True))
        for tid, c in zip(det["track_id"].tolist(), det["classes"].tolist(), strict=True):
            assert cls3d[tid] == c and 0 <= c < len(OBJECT_CLASSES)


def test_occlusion_lowers_the_visible_fraction():
    fractions = torch.cat([sample(i).labels["detection2d"]["visible"] for i in range(0, 60, 7)])
    assert (fractions == 1.0).any() and (fractions < 0.9).any()


def test_bev_objects_agree_with_3d_boxes():
    for i in (1, 22, 45):
        s = sample(i)
        bev, obj = s.labels["bev_semantic"], s.labels["objects3d"]
        grid = world().setup.grid
        centres = grid.cell_centres(torch.float64)
        for name, kinds in (("vehicle", ("car", "truck")), ("pedestrian", ("pedestrian",)), ("cone", ("cone",))):
            sel = torch.isin(obj["classes"], torch.tensor([OBJECT_CLASSES.index(k) for k in kinds]))
            expect = torch.zeros(grid.shape, dtype=torch.bool)
            for x, y, _, l, w, _, yaw in obj["boxes"][sel].double().tolist():
                dx, dy = centres[..., 0] - x, centres[..., 1] - y
                c, sn = math.cos(yaw), math.sin(yaw)
                inside = ((c * dx + sn * dy).abs() <= l / 2) & ((-sn * dx + c * dy).abs() <= w / 2)
                assert bev[BEV[name]][inside].all()  # cells under each box are marked
                expect |= inside
                r, col, ok = grid.cell_indices(torch.tensor([x]), torch.tensor([y]))
                if ok[0]:
                    expect[r[0], col[0]] = True
            assert torch.equal(bev[BEV[name]].bool(), expect)  # and nothing else is


def test_bev_drivable_agrees_with_camera_drivable():
    s = sample(8)
    grid, bev = world().setup.grid, s.labels["bev_semantic"][BEV["drivable"]].bool()
    rays = ray_directions(s.intrinsics.double(), H, W)
    agree = total = 0
    for cam in range(len(s.camera_names)):
        depth = s.labels["depth"][cam].double()
        m = depth > 0
        p = transform_points(s.T_ego_from_cam[cam].double(), rays[cam][m] * depth[m, None])
        ground = s.labels["semantic"][cam][m] <= SEM["terrain"]
        r, c, ok = grid.cell_indices(p[:, 0], p[:, 1])
        keep = ok & ground
        agree += int((bev[r[keep], c[keep]] == s.labels["drivable"][cam][m][keep].bool()).sum())
        total += int(keep.sum())
    assert total > 1000 and agree / total > 0.97


def test_ego_path_and_velocities_match_the_next_frames():
    w = world()
    rate = w.config.rate_hz
    for i in (10, 31):
        a, b = w[i], w[i + 1]
        rel = invert_transform(a.T_world_from_ego.double()) @ b.T_world_from_ego.double()
        x, y, yaw = a.labels["ego_path"][0].double().tolist()
        assert abs(rel[0, 3] - x) < 1e-3 and abs(rel[1, 3] - y) < 1e-3
        assert abs(math.atan2(rel[1, 0], rel[0, 0]) - yaw) < 1e-4
        # Objects: displacement between frames (in world) equals velocity / rate.
        oa, ob = a.labels["objects3d"], b.labels["objects3d"]
        pos_b = dict(zip(ob["track_id"].tolist(), transform_points(
            b.T_world_from_ego.double(), ob["boxes"][:, :3].double()).tolist(), strict=True))
        world_a = transform_points(a.T_world_from_ego.double(), oa["boxes"][:, :3].double())
        R = a.T_world_from_ego.double()[:2, :2]
        checked = 0
        for k, tid in enumerate(oa["track_id"].tolist()):
            if tid not in pos_b:
                continue
            disp = (torch.tensor(pos_b[tid][:2]) - world_a[k, :2]) * rate
            v_world = R @ oa["velocity"][k].double()
            assert torch.allclose(disp, v_world, atol=0.35), (tid, disp, v_world)
            checked += 1
        assert checked > 3


def test_traffic_lights_have_state_lane_and_boxes():
    w = SyntheticWorld(WorldConfig(setup={"image_size": (96, 192)}, num_scenes=4, frames_per_scene=5,
                                   layout="intersection"))
    found = 0
    for i in range(0, 20, 5):
        s = w[i]
        tl, det = s.labels["traffic_light"], s.labels["detection2d"]
        for box, tid, st, lane in zip(tl["boxes"], tl["track_id"], tl["state"], tl["lane"], strict=True):
            k = (det["track_id"] == tid).nonzero().squeeze(1)
            assert any(torch.equal(det["boxes"][j], box) for j in k)
            assert 0 <= st <= 2 and -3 <= lane <= 3
            found += 1
        # Lamps face approaching traffic: rear-facing cameras only ever see a light's back.
        assert not set(tl["camera"].tolist()) & {s.camera_names.index(n) for n in ("rear", "left_repeater",
                                                                                  "right_repeater")}
    assert found > 0


def test_a_light_has_a_state_only_where_its_lit_lamp_shows():
    """The state is labelled where the image shows it: every labelled light's box holds a pixel of its lit lamp's
    colour, and lights whose lamp no ray hits (seen side-on, cut off at the image's edge, hidden, too far for a
    pixel) stay traffic_light boxes in detection2d without a state."""
    w = SyntheticWorld(WorldConfig(setup={"image_size": (96, 192)}, num_scenes=6, frames_per_scene=3,
                                   layout="intersection", lighting="day", fog=0.0, sensor_noise=0.0))
    # state -> (brighter, darker) channel pairs of its lamp once tone-mapped: red (1, .26, .18), yellow (1, 1, .11),
    # green (.33, 1, 1)
    lamp = {0: [(0, 1)], 1: [(0, 2), (1, 2)], 2: [(1, 0)]}
    labelled = unlabelled = 0
    for i in range(len(w)):
        s = w[i]
        tl, det = s.labels["traffic_light"], s.labels["detection2d"]
        for box, st, cam in zip(tl["boxes"].tolist(), tl["state"].tolist(), tl["camera"].tolist(), strict=True):
            x1, y1, x2, y2 = (int(box[0]), int(box[1]), int(box[2] + 0.999), int(box[3] + 0.999))
            crop = s.images[cam, :, y1:y2, x1:x2].float() / 255
            saturated = crop.amax(0) > 0.6
            for hi, lo in lamp[st]:
                saturated &= crop[hi] - crop[lo] > 0.3
            assert bool(saturated.any()), (i, cam, box, st)
            labelled += 1
        lights = det["classes"] == OBJECT_CLASSES.index("traffic_light")
        unlabelled += int(lights.sum()) - len(tl["boxes"])
    assert labelled > 10 and unlabelled > 0


def test_drop_labels_drops_the_configured_fraction():
    w = SyntheticWorld(WorldConfig(setup={"image_size": (H, W)}, num_scenes=200, frames_per_scene=20,
                                   drop_labels={"depth": 0.3, "lanes": 1.0}))
    n = 4000
    kept = sum(w.label_present(i, "depth") for i in range(n)) / n
    assert abs(kept - 0.7) < 0.03
    assert not any(w.label_present(i, "lanes") for i in range(100))
    assert all(w.label_present(i, "semantic") for i in range(100))
    missing = next(i for i in range(n) if not w.label_present(i, "depth"))
    s = w[missing]
    assert "depth" not in s.labels and "lanes" not in s.labels and "semantic" in s.labels
