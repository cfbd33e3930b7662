"""The single source of truth for frames: SE(3), pinhole projection, rays, camera angles, the BEV grid, boxes."""

import math

import pytest
import torch

from hydranet.geometry import (
    BevGrid,
    box_corners,
    camera_angles,
    camera_extrinsics,
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
from hydranet.setup import default_rig


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
    rig = default_rig((96, 192))
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
    rig = default_rig((32, 64))
    K = rig.intrinsics()[0].double()
    rays = ray_directions(K, 32, 64)
    assert torch.allclose(rays[..., 2], torch.ones(32, 64, dtype=torch.float64))
    uv, valid = project((rays * 7.5).reshape(-1, 3), K, (32, 64))
    assert valid.all()
    assert torch.allclose(uv, pixel_grid(32, 64, torch.float64).reshape(-1, 2), atol=1e-9)


def test_resize_rescales_projection():
    rig = default_rig((64, 128))
    K = rig.intrinsics()[0].double()
    pt = torch.tensor([[1.0, -0.5, 9.0]], dtype=torch.float64)
    uv, _ = project(pt, K)
    uv2, _ = project(pt, resize_intrinsics(K, 2.0, 2.0))
    assert torch.allclose(uv2, uv * 2, atol=1e-9)
    assert torch.allclose(rig.intrinsics((128, 256))[0].double(), resize_intrinsics(K, 2.0, 2.0), atol=1e-4)


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


def test_camera_extrinsics_with_roll_and_its_inverse():
    # roll 0 keeps yaw/pitch bit-exact (the world's default rig renders identically); angles round-trip
    T0 = camera_extrinsics((1.0, 0.2, 1.4), 30.0, 5.0)
    assert torch.equal(T0, camera_extrinsics((1.0, 0.2, 1.4), 30.0, 5.0, 0.0))
    T = camera_extrinsics((1.0, 0.2, 1.4), -120.0, 7.5, 3.0)
    yaw, pitch, roll = camera_angles(T)
    assert (round(yaw, 9), round(pitch, 9), round(roll, 9)) == (-120.0, 7.5, 3.0)
    # roll turns the image about the optical axis: the optical axis (camera z) is unchanged
    assert torch.allclose(T[:3, 2], camera_extrinsics((1.0, 0.2, 1.4), -120.0, 7.5)[:3, 2], atol=1e-12)
    assert not torch.allclose(T[:3, 0], camera_extrinsics((1.0, 0.2, 1.4), -120.0, 7.5)[:3, 0], atol=1e-3)


def test_bev_grid_is_one_validated_value():
    assert BevGrid((-8, 8), (-8, 8), 0.5) == BevGrid.model_validate({"x_range": [-8.0, 8.0], "y_range": [-8, 8],
                                                                      "cell": 0.5})
    assert len({BevGrid(cell=1.0), BevGrid(cell=1.0), BevGrid()}) == 2  # hashable, compared by value
    for bad, match in (({"cell": 0}, "greater than 0"), ({"x_range": (2, 1)}, "max > min"),
                       ({"x_range": (0, 1.25)}, "not a multiple"), ({"cell": "1.0"}, "expected a number"),
                       ({"cell": float("nan")}, "finite|number")):
        with pytest.raises(ValueError, match=match):
            BevGrid.model_validate(bad)
