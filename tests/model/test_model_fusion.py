"""Camera→BEV fusion geometry: BEV reference points land where the contract geometry says they do."""


import pytest
import torch

from hydranet.geometry import (
    BevGrid,
    camera_extrinsics,
    intrinsics_from_fov,
    invert_transform,
    project,
    transform_points,
)
from hydranet.model.fusion import OUTSIDE, BevFusion, BevSampler, project_to_cameras
from hydranet.setup import default_rig

H, W, STRIDE = 64, 128, 8
GRID = BevGrid((-16.0, 16.0), (-16.0, 16.0), 1.0)


def uv_features(batch: int, cams: int) -> dict[str, torch.Tensor]:
    """A stride-8 feature map whose two channels are the image u and v of each feature pixel's centre."""
    h, w = H // STRIDE, W // STRIDE
    v, u = torch.meshgrid((torch.arange(h) + 0.5) * STRIDE, (torch.arange(w) + 0.5) * STRIDE, indexing="ij")
    f = torch.stack([u, v]).expand(batch * cams, 2, h, w).contiguous()
    return {"p3": f}


def test_projection_matches_contract_geometry_for_the_default_rig():
    rig = default_rig((H, W))
    K, T = rig.intrinsics()[None], rig.extrinsics()[None]
    pts = torch.tensor([[10.0, 2.0, 0.0], [-8.0, -1.0, 1.0], [3.0, 9.0, 0.5], [0.5, -12.0, 2.0]])
    coords, visible = project_to_cameras(pts, K, T, (H, W), min_depth=0.3)
    cam_pts = transform_points(invert_transform(T.double()), pts.double()[None, None])
    uv, ok = project(cam_pts, K.double(), (H, W), min_depth=0.3)
    assert torch.equal(visible, ok)
    expected = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1).float()
    assert torch.allclose(coords[visible], expected[ok], atol=1e-5)
    assert (coords[~visible] == OUTSIDE).all()  # invisible points sample nothing
    assert visible.any(1).all()  # with 8 cameras every point around the car is seen


def test_point_on_optical_axis_samples_the_image_centre():
    K = intrinsics_from_fov(W, H, 60.0).float()[None, None]
    T = camera_extrinsics((1.0, 0.0, 1.5), 0.0, 0.0).float()[None, None]  # looking straight down +x
    coords, visible = project_to_cameras(torch.tensor([[11.0, 0.0, 1.5]]), K, T, (H, W), 0.3)
    assert visible.item() and torch.allclose(coords, torch.zeros(2), atol=1e-6)
    behind, vis = project_to_cameras(torch.tensor([[-5.0, 0.0, 1.5]]), K, T, (H, W), 0.3)
    assert not vis.item()


def lifted_uv(K: torch.Tensor, T: torch.Tensor, heights=(0.0,)) -> tuple[torch.Tensor, torch.Tensor, BevSampler]:
    sampler = BevSampler(GRID, 2, 4, list(heights), ["p3"], stride=1)
    fused, count = sampler.lift(uv_features(K.shape[0], K.shape[1]), K, T, (H, W))
    return fused, count, sampler


def test_sampled_features_equal_projected_pixels_per_sample_K_and_T():
    # Bilinear sampling of a feature map that is linear in (u, v) returns exactly the (u, v) the
    # BEV point projects to, so this checks the whole lift geometry cell by cell. Two samples with
    # different K *and* T in one batch must each follow their own calibration.
    K1 = intrinsics_from_fov(W, H, 90.0).float()
    K2 = intrinsics_from_fov(W, H, 60.0).float()
    T1 = camera_extrinsics((1.5, 0.0, 1.4), 0.0, 5.0).float()
    T2 = camera_extrinsics((0.0, 0.5, 1.8), 30.0, 10.0).float()
    K = torch.stack([K1, K2])[:, None]
    T = torch.stack([T1, T2])[:, None]
    fused, count, sampler = lifted_uv(K, T)
    pts = sampler.points  # [Z*R*C, 3]
    for b in range(2):
        cam = transform_points(invert_transform(T[b, 0].double()), pts.double())
        uv, ok = project(cam, K[b, 0].double(), (H, W), 0.3)
        interior = ok & (uv[:, 0] > 4) & (uv[:, 0] < W - 4) & (uv[:, 1] > 4) & (uv[:, 1] < H - 4)
        got = fused[b].reshape(2, -1).T  # [P, 2]
        assert interior.sum() > 20
        assert torch.allclose(got[interior].double(), uv[interior], atol=1e-3)
        assert torch.equal(count[b].reshape(-1) > 0, ok)
        assert (got[~ok] == 0).all()
    assert not torch.equal(count[0], count[1])  # different calibration, different footprint


def test_hot_pixel_lands_in_the_bev_cell_its_ray_hits_on_the_ground():
    grid = BevGrid((-8.0, 8.0), (-8.0, 8.0), 0.25)
    K = intrinsics_from_fov(W, H, 90.0).float()[None, None]
    T = camera_extrinsics((0.0, 0.0, 2.0), 20.0, 15.0).float()[None, None]
    h, w = H // STRIDE, W // STRIDE
    row, col = 6, 5  # a feature pixel below the horizon
    feat = torch.zeros(1, 1, h, w)
    feat[0, 0, row, col] = 1.0
    sampler = BevSampler(grid, 1, 4, [0.0], ["p3"], stride=1)
    fused, _ = sampler.lift({"p3": feat}, K, T, (H, W))
    Tm = T[0, 0].double()

    def ground_hit(u: float, v: float) -> torch.Tensor:  # ray through pixel (u, v) meets z = 0 (ego)
        ray = torch.linalg.solve(K[0, 0].double(), torch.tensor([u, v, 1.0], dtype=torch.float64))
        d = Tm[:3, :3] @ ray
        return Tm[:3, 3] + d * (-Tm[2, 3] / d[2])

    u0, v0 = (col + 0.5) * STRIDE, (row + 0.5) * STRIDE
    hit = ground_hit(u0, v0)
    r, c, inside = grid.cell_indices(hit[0:1], hit[1:2])
    assert inside.item()
    bev = fused[0, 0, 0]
    peak = torch.nonzero(bev == bev.max())[0]
    assert (peak - torch.cat([r, c])).abs().max() <= 1  # the strongest response is at the hit cell
    assert bev[r, c].item() >= 0.5 * bev.max().item() > 0
    # Every cell that received the feature lies inside the bilinear support (±1 feature pixel) on the ground.
    corners = [(u0 + du, v0 + dv) for du in (-STRIDE, STRIDE) for dv in (-STRIDE, STRIDE)]
    reach = max((ground_hit(u, v) - hit).norm().item() for u, v in corners)
    rr, cc = torch.nonzero(bev > 0, as_tuple=True)
    dist = (grid.cell_centres()[rr, cc].double() - hit[:2]).norm(dim=-1)
    assert dist.max() < reach + grid.cell


def test_reference_heights_reach_different_pixels():
    K = intrinsics_from_fov(W, H, 90.0).float()[None, None]
    T = camera_extrinsics((0.0, 0.0, 1.5), 0.0, 0.0).float()[None, None]
    fused, count, _ = lifted_uv(K, T, heights=(0.0, 1.5, 3.0))
    r, c = GRID.cell_indices(torch.tensor([10.0]), torch.tensor([0.0]))[:2]
    v = fused[0, 1, :, r, c].squeeze()  # image v at z = 0, 1.5 (camera height), 3
    assert v[0] > H / 2 + 1 and abs(v[1] - H / 2) < 1 and v[2] < H / 2 - 1  # below, at, above the horizon


def test_fusion_module_output_shape_and_upsampling_to_the_grid():
    torch.manual_seed(0)
    rig = default_rig((H, W))
    fusion = BevFusion(GRID, 2, 16, [0.0, 1.0], ["p3"], stride=2, channels=8, encoder_blocks=1)
    K, T = rig.intrinsics()[None].expand(2, -1, -1, -1), rig.extrinsics()[None].expand(2, -1, -1, -1)
    feats = {"p3": torch.randn(2 * len(rig), 2, H // STRIDE, W // STRIDE)}
    out = fusion(feats, K, T, (H, W))
    assert out.shape == (2, 16, *GRID.shape)
    with pytest.raises(ValueError, match="no video memory"):
        fusion.forward_step(feats, K, T, (H, W), torch.eye(4).expand(2, 4, 4), torch.zeros(2), None)


def test_camera_average_counts_only_the_cameras_that_see_a_point():
    # Two cameras of one sample, looking forward and left: where only one sees a point, the lifted
    # feature is exactly that camera's (u, v); where both do, it is the mean of the two projections.
    K = intrinsics_from_fov(W, H, 100.0).float().expand(1, 2, 3, 3)
    T = torch.stack([camera_extrinsics((0.0, 0.0, 1.5), 0.0, 5.0), camera_extrinsics((0.0, 0.0, 1.5), 60.0, 5.0)])
    T = T.float()[None]
    fused, count, sampler = lifted_uv(K, T)
    pts = sampler.points.double()
    uvs, oks = [], []
    for n in range(2):
        uv, ok = project(transform_points(invert_transform(T[0, n].double()), pts), K[0, n].double(), (H, W), 0.3)
        interior = (uv[:, 0] > 4) & (uv[:, 0] < W - 4) & (uv[:, 1] > 4) & (uv[:, 1] < H - 4)
        uvs.append(uv)
        oks.append((ok, ok & interior))
    got = fused[0].reshape(2, -1).T.double()
    assert torch.equal(count[0].reshape(-1), (oks[0][0].double() + oks[1][0].double()))
    only0 = oks[0][1] & ~oks[1][0]
    both = oks[0][1] & oks[1][1]
    assert only0.sum() > 10 and both.sum() > 10
    assert torch.allclose(got[only0], uvs[0][only0], atol=1e-3)
    assert torch.allclose(got[both], (uvs[0][both] + uvs[1][both]) / 2, atol=1e-3)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_visible_pair_gather_equals_grid_sample_over_every_camera(layout):
    """The eager sampler (one weighted gather of the visible (point, camera) pairs' taps, averaged over cameras,
    in cell-major order) and the traced one (grid_sample over every camera, what ONNX gets) compute the same
    values and the same feature gradients, with a dead camera."""
    from hydranet.model.fusion import _gather, _plan, _sample_dense

    torch.manual_seed(0)
    rig = default_rig((H, W))
    B, N = 2, len(rig)
    K = rig.intrinsics()[None].expand(B, -1, -1, -1)
    T = rig.extrinsics()[None].expand(B, -1, -1, -1)
    heights = [0.0, 1.0, 4.0]
    sampler = BevSampler(GRID, 5, 4, heights, ["p2", "p3"], stride=1)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    feats = {"p2": torch.randn(B * N, 5, H // 4, W // 4).to(memory_format=fmt).requires_grad_(),
             "p3": torch.randn(B * N, 5, H // 8, W // 8).to(memory_format=fmt).requires_grad_()}
    coords, visible = project_to_cameras(sampler.points, K, T, (H, W), sampler.min_depth)
    visible[1, 3] = False  # a dead camera: its points sample nothing
    coords = torch.where(visible[..., None], coords, torch.full_like(coords, OUTSIDE))
    count = visible.sum(1)
    assert count.max() >= 2  # some points are seen by two cameras: the mean over cameras is exercised
    plan = _plan([tuple(f.shape[-2:]) for f in feats.values()], coords, visible, len(heights))
    assert torch.equal(plan.count, count)
    R, C = GRID.shape
    sparse = _gather(feats, sampler.levels, plan).reshape(B, R, C, len(heights), 5)
    dense = _sample_dense(feats, sampler.levels, coords, B, N) / count.clamp(min=1)[:, None]  # [B, C, P]
    dense = dense.reshape(B, 5, len(heights), R, C).permute(0, 3, 4, 2, 1)  # height-major -> cell-major
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(sparse)
    g_sparse = torch.autograd.grad((sparse * g).sum(), list(feats.values()))
    g_dense = torch.autograd.grad((dense * g).sum(), list(feats.values()))
    for a, b in zip(g_sparse, g_dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert float(g_sparse[0].reshape(B, N, -1)[1, 3].abs().max()) == 0.0  # the dead camera gets no gradient


def test_gather_backward_groups_the_plan_by_table_row_once_and_only_when_trained():
    """The gather's backward bags the plan's entries by the feature row they read: built on the first backward,
    reused by the next (a fixed rig sorts once), never built by inference; in bf16 its gradient matches the fp32
    one to bf16 precision."""
    from hydranet.model.fusion import _gather, _plan

    torch.manual_seed(0)
    rig = default_rig((H, W))
    K, T = rig.intrinsics()[None], rig.extrinsics()[None]
    sampler = BevSampler(GRID, 5, 4, [0.0, 1.0], ["p2", "p3"], stride=1)
    feats = {"p2": torch.randn(len(rig), 5, H // 4, W // 4), "p3": torch.randn(len(rig), 5, H // 8, W // 8)}
    coords, visible = project_to_cameras(sampler.points, K, T, (H, W), sampler.min_depth)
    plan = _plan([tuple(f.shape[-2:]) for f in feats.values()], coords, visible, 2)
    with torch.no_grad():
        _gather(feats, sampler.levels, plan)
    assert plan.by_table_row == {}
    table_rows = sum(v.shape[0] * v.shape[2] * v.shape[3] for v in feats.values())
    grads, built = {}, []
    for dtype in (torch.float32, torch.bfloat16):
        leaves = {k: v.to(dtype).requires_grad_() for k, v in feats.items()}
        out = _gather(leaves, sampler.levels, plan)
        g = torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(dtype)
        grads[dtype] = torch.autograd.grad((out * g).sum(), list(leaves.values()))
        built.append(plan.by_table_row[table_rows])
    assert all(a is b for a, b in zip(*built, strict=True))  # the same tensors: sorted once
    for a, b in zip(grads[torch.bfloat16], grads[torch.float32], strict=True):
        torch.testing.assert_close(a.float(), b, atol=2e-2, rtol=2e-2)


def test_eager_and_traced_sampler_give_the_same_bev_map():
    """``BevSampler.forward`` builds the reduce conv's input channels-last from the gather and channels-first from
    the traced grid_sample: the same channels in the same order (the 1x1 conv's weights serve both)."""
    torch.manual_seed(0)
    rig = default_rig((H, W))
    K, T = rig.intrinsics()[None], rig.extrinsics()[None]
    sampler = BevSampler(GRID, 5, 4, [0.0, 1.0, 4.0], ["p2", "p3"], stride=1).eval()
    feats = {"p2": torch.randn(len(rig), 5, H // 4, W // 4), "p3": torch.randn(len(rig), 5, H // 8, W // 8)}

    class Levels(torch.nn.Module):  # what tracing sees: tensors in, the sampler's module state inside
        def __init__(self) -> None:
            super().__init__()
            self.sampler = sampler

        def forward(self, p2: torch.Tensor, p3: torch.Tensor) -> torch.Tensor:
            return self.sampler({"p2": p2, "p3": p3}, K, T, (H, W))

    with torch.no_grad():
        eager = sampler(feats, K, T, (H, W))
        traced = torch.jit.trace(Levels(), (feats["p2"], feats["p3"]))
        torch.testing.assert_close(eager, traced(feats["p2"], feats["p3"]), atol=1e-5, rtol=1e-5)


def test_sampling_plan_is_reused_for_one_rig_and_rebuilt_when_its_values_change():
    """The sampler keeps the last rig's plan while K, T and camera_valid hold the same values (a car's fixed rig),
    and builds a new one when any of them changes, even in place in the same tensor; every output equals a fresh
    sampler's (no plan kept)."""
    rig = default_rig((H, W))
    B, N = 2, len(rig)
    K = rig.intrinsics()[None].repeat(B, 1, 1, 1)
    T = rig.extrinsics()[None].repeat(B, 1, 1, 1)
    feats = uv_features(B, N)
    sampler = BevSampler(GRID, 2, 4, [0.0, 1.0], ["p3"], stride=1)

    def lifted(K: torch.Tensor, T: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        fused, count = sampler.lift(feats, K, T, (H, W), valid)
        fresh = BevSampler(GRID, 2, 4, [0.0, 1.0], ["p3"], stride=1)
        expected, expected_count = fresh.lift(feats, K.clone(), T.clone(), (H, W), valid)
        assert torch.equal(fused, expected) and torch.equal(count, expected_count)
        return fused

    first = lifted(K, T)
    plan = sampler.plan(feats, K, T, (H, W))
    assert sampler.plan(feats, K.clone(), T.clone(), (H, W)) is plan  # same values, other tensors: reused
    K[1, 2, 0, 0] *= 1.2  # one camera's focal length changes in place
    assert sampler.plan(feats, K, T, (H, W)) is not plan
    assert not torch.equal(lifted(K, T), first)
    T[0, 0, 0, 3] += 0.5  # a camera moves
    lifted(K, T)
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[0, 3] = False  # a camera fails
    masked = lifted(K, T, valid)
    assert sampler.plan(feats, K, T, (H, W), valid) is sampler.plan(feats, K, T, (H, W), valid.clone())
    assert not torch.equal(lifted(K, T), masked)
    half = {"p3": feats["p3"][:, :, : H // STRIDE // 2]}  # another feature-map size: its own plan
    assert sampler.plan(half, K, T, (H, W)) is not sampler.plan(feats, K, T, (H, W))
    # The sampler's own geometry changed in place (reference heights, the minimum depth): a new plan, as a fresh
    # sampler with that geometry projects it.
    plan = sampler.plan(feats, K, T, (H, W))
    sampler.points[:, 2] += 0.5
    assert sampler.plan(feats, K, T, (H, W)) is not plan
    raised = sampler.lift(feats, K, T, (H, W))[0]
    fresh = BevSampler(GRID, 2, 4, [0.5, 1.5], ["p3"], stride=1)
    assert torch.equal(raised, fresh.lift(feats, K, T, (H, W))[0])
    plan = sampler.plan(feats, K, T, (H, W))
    sampler.min_depth = 5.0
    assert sampler.plan(feats, K, T, (H, W)) is not plan
