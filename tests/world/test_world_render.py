"""Rendering is exact: depth matches analytic geometry, instance pixels lie inside their 3D boxes and
inside their projected corners, dense labels agree with each other, and output is deterministic."""

import functools

import torch

from hydranet.data.sample import SEMANTIC_CLASSES, collate
from hydranet.geometry import box_corners, invert_transform, project, ray_directions, transform_points
from hydranet.world import SyntheticWorld, WorldConfig

SEM = {n: i for i, n in enumerate(SEMANTIC_CLASSES)}
GROUND = [SEM["road"], SEM["lane_marking"], SEM["sidewalk"], SEM["terrain"]]
H, W = 48, 96


@functools.cache
def small_world(**kw) -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(setup={"image_size": (H, W)}, num_scenes=4, frames_per_scene=10, **kw))


@functools.cache
def sample(i: int, **kw):
    return small_world(**kw)[i]


def test_ground_depth_is_the_analytic_ray_plane_distance():
    checked = 0
    for i in (0, 13, 27):
        s = sample(i)
        T_wc = s.T_world_from_ego.double() @ s.T_ego_from_cam.double()  # [N, 4, 4]
        rays = ray_directions(s.intrinsics.double(), H, W)  # [N, H, W, 3], camera z = 1
        d = torch.einsum("nij,nhwj->nhwi", T_wc[:, :3, :3], rays)
        t = -T_wc[:, None, None, 2, 3] / d[..., 2]  # ray meets z = 0 at this z-depth
        sem, depth = s.labels["semantic"], s.labels["depth"]
        ground = torch.isin(sem, torch.tensor(GROUND)) & (depth > 0)
        assert ground.sum() > 1000
        assert torch.allclose(depth[ground].double(), t[ground], rtol=2e-3, atol=2e-3)
        checked += int(ground.sum())
        # Sky has no depth; anything with depth is not sky.
        assert (depth[sem == SEM["sky"]] == 0).all()
        assert (sem[depth > 0] != SEM["sky"]).all()
    assert checked > 5000


def test_instance_pixels_lie_in_their_box_and_its_projection():
    objects_checked = 0
    for i in (0, 5, 17, 33):
        s = sample(i)
        obj = s.labels["objects3d"]
        inst, depth = s.labels["instance"], s.labels["depth"]
        rays = ray_directions(s.intrinsics.double(), H, W)
        for k, tid in enumerate(obj["track_id"].tolist()):
            box = obj["boxes"][k].double()
            corners = box_corners(box)
            for cam in range(len(s.camera_names)):
                m = inst[cam] == tid
                if m.sum() < 3:
                    continue
                # Unprojected pixels are inside the labelled box (2 cm slack).
                p_cam = rays[cam][m] * depth[cam][m, None].double()
                p_ego = transform_points(s.T_ego_from_cam[cam].double(), p_cam)
                local = p_ego - box[:3]
                c, sn = torch.cos(box[6]), torch.sin(box[6])
                lx, ly = c * local[:, 0] + sn * local[:, 1], -sn * local[:, 0] + c * local[:, 1]
                assert (lx.abs() <= box[3] / 2 + 0.02).all() and (ly.abs() <= box[4] / 2 + 0.02).all()
                assert (local[:, 2].abs() <= box[5] / 2 + 0.02).all()
                # The projected corners bound the instance's pixels (when all corners are in front).
                pc = transform_points(invert_transform(s.T_ego_from_cam[cam].double()), corners)
                if (pc[:, 2] > 0.1).all():
                    uv, _ = project(pc, s.intrinsics[cam].double())
                    v, u = m.nonzero().double().unbind(1)
                    assert u.min() + 0.5 >= uv[:, 0].min() - 1e-3 and u.max() + 0.5 <= uv[:, 0].max() + 1e-3
                    assert v.min() + 0.5 >= uv[:, 1].min() - 1e-3 and v.max() + 0.5 <= uv[:, 1].max() + 1e-3
                objects_checked += 1
    assert objects_checked >= 10


def test_dense_labels_agree():
    s = sample(21)
    sem, lanes, drv = s.labels["semantic"], s.labels["lanes"], s.labels["drivable"]
    road = (sem == SEM["road"]) | (sem == SEM["lane_marking"])
    assert torch.equal(drv.bool(), road)
    assert (sem[(lanes == 1) | (lanes == 2)] == SEM["lane_marking"]).all()
    assert (sem[lanes == 3] == SEM["sidewalk"]).all()  # the curb strip just outside the road edge
    assert ((lanes == 1) | (lanes == 2)).any() and (lanes == 3).any()
    assert s.labels["instance"].dtype == torch.int32 and s.labels["depth"].dtype == torch.float32
    things = torch.isin(sem, torch.tensor([SEM[n] for n in ("car", "truck", "pedestrian", "cone")]))
    assert (s.labels["instance"][things] > 0).all()
    assert (s.labels["instance"][torch.isin(sem, torch.tensor(GROUND + [SEM["sky"]]))] == 0).all()


def test_same_seed_same_bytes_and_random_access():
    a = SyntheticWorld(WorldConfig(setup={"image_size": (H, W)}, num_scenes=2, frames_per_scene=4, seed=5))
    b = SyntheticWorld(WorldConfig(setup={"image_size": (H, W)}, num_scenes=2, frames_per_scene=4, seed=5))
    seq = [a[i] for i in range(6)]  # sequential, scenes cached along the way
    alone = b[5]  # fresh process state, straight to the middle of scene 1
    assert seq[5].images.numpy().tobytes() == alone.images.numpy().tobytes()
    assert torch.equal(seq[5].T_world_from_ego, alone.T_world_from_ego)
    for name, value in alone.labels.items():
        other = seq[5].labels[name]
        if isinstance(value, dict):
            assert value.keys() == other.keys() and all(torch.equal(value[k], other[k]) for k in value), name
        else:
            assert torch.equal(value, other), name
    c = SyntheticWorld(WorldConfig(setup={"image_size": (H, W)}, num_scenes=2, frames_per_scene=4, seed=6))
    assert not torch.equal(c[5].images, alone.images)
    assert not torch.equal(seq[4].images, seq[5].images)  # time moves
    batch = collate(seq[:3])
    assert batch.images.shape == (3, 8, 3, H, W) and batch.present["depth"].all()


def test_lighting_and_fog_change_the_picture():
    day = sample(0, lighting="day", fog=0.0).images.float().mean()
    night = sample(0, lighting="night", fog=0.0).images.float().mean()
    assert night < 0.5 * day
    fog = sample(0, lighting="day", fog=0.05).images.float()
    clear = sample(0, lighting="day", fog=0.0).images.float()
    assert fog.std() < clear.std()  # fog washes out contrast
