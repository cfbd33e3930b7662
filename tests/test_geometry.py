"""The single source of truth for frames: SE(3), pinhole projection, rays, the rig, the BEV grid, boxes."""

import math

import pytest
import torch

from hydranet.geometry import (
    BevGrid,
    box_corners,
    default_rig,
    invert_transform,
    make_transform,
    pixel_grid,
    project,
    ray_directions,
    resize_intrinsics,
    rot_x,
    rot_y,
    rot_z,
    transform_points,
    unproject,
    wrap_angle,
    yaw_transform,
)


def _random_transform(gen: torch.Generator) -> torch.Tensor:
    a = torch.rand(3, generator=gen, dtype=torch.float64) * 6 - 3
    t = torch.randn(3, generator=gen, dtype=torch.float64) * 5
    return make_transform(rot_z(a[0]) @ rot_y(a[1]) @ rot_x(a[2]), t)


def test_se3_inverse_and_composition():
    gen = torch.Generator().manual_seed(0)
    T = _random_transform(gen)
    pts = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    back = transform_points(invert_transform(T), transform_points(T, pts))
    assert torch.allclose(back, pts, atol=1e-10)
    assert torch.allclose(invert_transform(T) @ T, torch.eye(4, dtype=torch.float64), atol=1e-12)
    R = T[:3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert math.isclose(float(torch.linalg.det(R)), 1.0, abs_tol=1e-12)


def test_project_unproject_round_trip():
    rig = default_rig(96, 192)
    K = rig.intrinsics()
    gen = torch.Generator().manual_seed(1)
    uv = torch.rand(len(rig), 50, 2, generator=gen) * torch.tensor([192.0, 96.0])
    depth = torch.rand(len(rig), 50, generator=gen) * 80 + 0.5
    pts = unproject(uv, depth, K)
    assert torch.allclose(pts[..., 2], depth, atol=1e-4)  # depth is z-depth, not ray length
    uv2, valid = project(pts, K, (96, 192))
    assert valid.all()
    assert torch.allclose(uv2, uv, atol=1e-3)
    # Points behind the camera or outside the image are flagged invalid.
    _, valid = project(torch.tensor([[0.0, 0.0, -1.0], [100.0, 0.0, 1.0]]), K[0], (96, 192))
    assert valid.tolist() == [False, False]


def test_rays_hit_their_pixels():
    rig = default_rig(32, 64)
    K = rig.intrinsics()[0].double()
    rays = ray_directions(K, 32, 64)
    assert torch.allclose(rays[..., 2], torch.ones(32, 64, dtype=torch.float64))
    uv, valid = project((rays * 7.5).reshape(-1, 3), K, (32, 64))
    assert valid.all()
    assert torch.allclose(uv, pixel_grid(32, 64, torch.float64).reshape(-1, 2), atol=1e-9)


def test_resize_rescales_projection():
    rig = default_rig(64, 128)
    K = rig.intrinsics()[0].double()
    pt = torch.tensor([[1.0, -0.5, 9.0]], dtype=torch.float64)
    uv, _ = project(pt, K)
    uv2, _ = project(pt, resize_intrinsics(K, 2.0, 2.0))
    assert torch.allclose(uv2, uv * 2, atol=1e-9)
    assert torch.allclose(rig.resized(128, 256).intrinsics()[0].double(), resize_intrinsics(K, 2.0, 2.0), atol=1e-4)


def _cam_sees(rig, name: str, point_ego: tuple[float, float, float]) -> bool:
    i = rig.names.index(name)
    T = invert_transform(rig.extrinsics()[i].double())
    pc = transform_points(T, torch.tensor([point_ego], dtype=torch.float64))
    _, valid = project(pc, rig.intrinsics()[i].double(), (rig.height, rig.width))
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


def test_bev_grid_indices():
    grid = BevGrid((-20.0, 40.0), (-16.0, 16.0), 0.5)
    assert grid.shape == (120, 64)
    x = torch.tensor([39.9, -19.9, 0.1, 10.0])
    y = torch.tensor([15.9, -15.9, -0.1, 3.3])
    r, c, inside = grid.cell_indices(x, y)
    assert inside.all()
    assert (r[0], c[0]) == (0, 0) and (r[1], c[1]) == (119, 63)
    row, col = grid.metres_to_index(x, y)
    x2, y2 = grid.index_to_metres(row, col)
    assert torch.allclose(x2, x, atol=1e-5) and torch.allclose(y2, y, atol=1e-5)
    centres = grid.cell_centres()
    rr, cc, _ = grid.cell_indices(centres[..., 0], centres[..., 1])
    assert torch.equal(rr, torch.arange(120)[:, None].expand(120, 64))
    assert torch.equal(cc, torch.arange(64)[None].expand(120, 64))
    _, _, out = grid.cell_indices(torch.tensor([41.0]), torch.tensor([0.0]))
    assert not out.any()
    with pytest.raises(ValueError, match="x_range"):
        BevGrid((1.0, 0.0))


def test_box_corners_and_yaw():
    box = torch.tensor([10.0, -2.0, 0.75, 4.0, 2.0, 1.5, math.pi / 2])
    c = box_corners(box)
    assert c.shape == (8, 3)
    assert torch.allclose(c.mean(0), box[:3], atol=1e-5)
    # yaw 90 degrees: the box faces +y, so its front-left bottom corner (corner 0) is at +y, -x
    assert torch.allclose(c[0], torch.tensor([9.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(c[:, 1].max() - c[:, 1].min(), torch.tensor(4.0), atol=1e-5)
    assert torch.allclose(c[4, 2] - c[0, 2], torch.tensor(1.5))
    T = yaw_transform(3.0, 1.0, 0.3)
    moved = box_corners(torch.tensor([3.0, 1.0, 0.75, 4.0, 2.0, 1.5, 0.3], dtype=torch.float64))
    here = transform_points(T, box_corners(torch.tensor([0.0, 0.0, 0.75, 4.0, 2.0, 1.5, 0.0], dtype=torch.float64)))
    assert torch.allclose(moved, here, atol=1e-9)
    assert torch.allclose(wrap_angle(torch.tensor([3 * math.pi, -3.5 * math.pi])),
                          torch.tensor([-math.pi, 0.5 * math.pi]), atol=1e-5)
