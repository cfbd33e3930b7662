"""Camera features → BEV features by projecting 3D reference points into every camera.

Method (Simple-BEV, Harley et al., "Simple-BEV: What Really Matters for Multi-Sensor BEV
Perception?", ICRA 2023; the sampling step of BEVFormer's spatial cross-attention without the
learned offsets): every cell of the fusion grid -- the BEV grid at ``stride`` times its cell size,
``coarse_grid`` (2 m cells for a 1 m grid at the default stride 2) -- gets a column of 3D reference points
at fixed heights above the ground. Each point is moved into each camera with that sample's
``T_ego_from_cam`` and projected with its ``K``; the camera feature map is bilinearly sampled there
(``grid_sample``'s arithmetic; in eager mode only at the (point, camera) pairs where the point is in view,
one weighted gather of feature rows, since a point is seen by one or two of eight cameras, with the plan of
what to gather kept while the rig's values repeat: ``BevSampler.plan``). Samples are averaged over
the cameras that see the point, the height slices are stacked into channels (so the network still knows
*which* height a feature came from), and a small residual BEV encoder turns the result into the fusion-grid
map it upsamples to the ``[B, C, rows, cols]`` BEV grid every BEV head reads.

Why this and not lift-splat-shoot (predicted depth distribution + splat):
- Geometry is an *input*: K and T enter as tensors and are applied per sample, so a different rig,
  a recalibrated camera or per-sample augmentation needs no code change and no precomputed tables.
- Export: matmuls, a division and ``grid_sample`` (ONNX opset 16+, TensorRT native); the traced graph
  samples every camera with ``GridSample`` (static shapes), the same values as the eager gather. Lift-splat's
  voxel pooling needs scatter-add / cumsum tricks that exporters and TensorRT handle badly.
- Cost scales with BEV cells × heights × cameras × channels, not pixels × depth bins × channels,
  and is independent of image resolution; on 2 CPU cores that decides it.
- Simple-BEV measured bilinear sampling on par with depth-based lifting and deformable attention
  once resolution and batch size are right; it is also the easiest of the three to verify (a test
  checks that a BEV point lands on the pixel it projects to).
The known weakness — every height along a ray receives the same feature, i.e. no explicit depth —
is what the height-in-channels stacking, the BEV encoder and the camera depth task counteract.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydranet.geometry import BevGrid
from hydranet.model.temporal import TemporalMemory, TemporalState
from hydranet.model.tracing import tracing

OUTSIDE = -4.0  # normalised sampling coordinate of points no camera pixel sees


def coarse_grid(grid: BevGrid, stride: int) -> BevGrid:
    """The BEV grid at ``stride`` times the cell size (fusion resolution); spans must divide."""
    if grid.rows % stride or grid.cols % stride:
        raise ValueError(f"fusion stride {stride} must divide the BEV grid shape {grid.shape}")
    return BevGrid(grid.x_range, grid.y_range, grid.cell * stride)


def project_to_cameras(points: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor, image_hw: tuple[int, int],
                       min_depth: float, camera_valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Ego points ``[P, 3]`` into every camera: normalised sampling coords ``[B, N, P, 2]`` in [-1, 1]
    (``grid_sample`` convention, ``align_corners=False``) and a visibility mask ``[B, N, P]``. A point is
    visible in front of the camera (depth > ``min_depth`` m), inside the image, and, when ``camera_valid``
    (bool ``[B, N]``) is given, in a valid camera; every invisible point gets the coordinate ``OUTSIDE``.

    Written with plain matmuls and ``where`` (no in-place indexing, no matrix inverse) so it exports.
    Always fp32, also under bf16 autocast: a bf16 pixel coordinate at 200 px is off by up to 1 px.
    """
    with torch.autocast(points.device.type, enabled=False):
        return _project(points.float(), intrinsics.float(), T_ego_from_cam.float(), image_hw, min_depth,
                        camera_valid)


def _project(points: Tensor, intrinsics: Tensor, T_ego_from_cam: Tensor, image_hw: tuple[int, int],
             min_depth: float, camera_valid: Tensor | None) -> tuple[Tensor, Tensor]:
    R = T_ego_from_cam[..., :3, :3]  # [B, N, 3, 3]
    t = T_ego_from_cam[..., :3, 3:]  # [B, N, 3, 1]
    # p_cam = R^T (p_ego - t), computed with the point axis innermost ([B, N, 3, P]): ONNX Runtime then
    # broadcasts and divides P-long rows rather than 3-element ones (laid out point-major, the projection was
    # one of the costliest parts of the deployed frame in the deploy benchmark's ORT profile).
    p_cam = R.transpose(-1, -2) @ (points.t()[None, None] - t)
    uvw = intrinsics @ p_cam  # [B, N, 3, P]
    z = p_cam[:, :, 2]  # [B, N, P]
    in_front = z > min_depth
    z_safe = torch.where(in_front, z, torch.ones_like(z))
    h, w = image_hw
    u = uvw[:, :, 0] / z_safe * (2.0 / w) - 1.0  # pixel u in [0, W) -> [-1, 1) ; pixel centres are at +0.5
    v = uvw[:, :, 1] / z_safe * (2.0 / h) - 1.0
    visible = in_front & (u.abs() <= 1.0) & (v.abs() <= 1.0)
    if camera_valid is not None:
        # Masked here, before the coordinates are built: a second ``where`` over the finished [B, N, P, 2]
        # coordinates broadcasts along a 2-element axis, the costliest op of the deployed projection (0.9 ms).
        visible = visible & camera_valid.to(torch.bool)[:, :, None]
    # Invisible points go far outside the map: zero padding then samples exact zeros for them, so the
    # camera average needs no (slow, full-size) mask multiply.
    far = torch.full_like(u, OUTSIDE)
    coords = torch.stack([torch.where(visible, u, far), torch.where(visible, v, far)], -1)  # [B, N, P, 2]
    return coords, visible


class _BilinearTaps(torch.autograd.Function):
    """``out[d] = sum_{e in bag d} wgt[e] * rows[idx[e]]`` for a ``SamplingPlan``'s entries: ``rows [M, C]`` ->
    ``[D, C]`` in ``rows``' dtype (the weights are cast to it, as a conv's output is bf16 under autocast); an empty
    bag gives zeros.

    Both directions are one ``embedding_bag`` (mode ``sum`` with per-sample weights), which sums every tap that
    feeds a row in one pass, never building the ``[E, C]`` taps that an ``index_select``, a multiply and a scatter
    pass through memory three times. Forward bags the entries by output row; backward bags the same entries by
    feature row (``_by_table_row``: the transpose of the sampling matrix, sorted once per plan), so
    ``grad_rows[m] = sum_{e: idx[e] = m} wgt[e] * grad[bag[e]]``. On the demo's plan (331,936 entries, 32 bf16
    channels, one thread) that takes 0.6 ms of CPU, where ``index_select`` + multiply + ``index_add`` took 43 ms;
    the regrouping costs 11 ms once per plan. No gradient flows to the plan (the projection is geometry, not
    learnt)."""

    @staticmethod
    def forward(ctx, rows: Tensor, plan: SamplingPlan) -> Tensor:  # type: ignore[override]
        ctx.plan = plan
        ctx.num_rows = rows.shape[0]
        return F.embedding_bag(plan.taps, rows, plan.offsets, mode="sum",
                               per_sample_weights=plan.weights.to(rows.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        bag, weights, offsets = _by_table_row(ctx.plan, ctx.num_rows)
        grad_rows = F.embedding_bag(bag, grad.contiguous(), offsets, mode="sum",
                                    per_sample_weights=weights.to(grad.dtype))
        return grad_rows, None


def _by_table_row(plan: SamplingPlan, num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """The plan's entries bagged by the feature-table row they read (``bag [E]`` output rows, ``weights [E]``,
    ``offsets [num_rows]``), built on the first backward through the plan and kept in it: a plan is reused while
    the rig repeats, so training on one rig sorts once, and inference never does."""
    cached = plan.by_table_row.get(num_rows)
    if cached is None:
        order = torch.argsort(plan.taps, stable=True)
        per_row = torch.bincount(plan.taps, minlength=num_rows)
        cached = (plan.bag[order], plan.weights[order], torch.cumsum(per_row, 0) - per_row)
        plan.by_table_row[num_rows] = cached
    return cached


def _same_values(a: Tensor | None, b: Tensor | None) -> bool:
    """Both None, or tensors of one shape, dtype and device holding the same values (NaN never equals)."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


class SamplingPlan(NamedTuple):
    """What ``_gather`` reads, built from the geometry alone (``_plan``). Output rows are the reference points of
    each sample in *cell-major* order (row ``(b * cells + cell) * Z + z`` for the point at height ``z`` over BEV
    cell ``cell``), so the result views as ``[B, R, C', Z, C]``. Each row is a bag of entries: the four bilinear
    taps of every camera that sees the point, on every FPN level, as rows of the levels' concatenated
    ``[sum_l B*N*h_l*w_l, C]`` feature table (``taps [E]`` int64), weighted by the tap's bilinear weight over the
    number of cameras that see the point (``weights [E]`` fp32; 0 for a tap outside the map), ``bag [E]`` int64
    the row of each entry (ascending) and ``offsets [B*P]`` int64 the first entry of each row. ``count [B, P]``
    int64: the cameras that see each point, in ``BevSampler.points``' height-major order. ``by_table_row``: the
    entries regrouped by the table row they read, for the backward (``_by_table_row``), filled on first use."""

    taps: Tensor
    weights: Tensor
    bag: Tensor
    offsets: Tensor
    count: Tensor
    by_table_row: dict[int, tuple[Tensor, Tensor, Tensor]]


def _plan(level_hw: list[tuple[int, int]], coords: Tensor, visible: Tensor, heights: int) -> SamplingPlan:
    """The ``SamplingPlan`` of ``grid_sample``'s bilinear arithmetic (``align_corners=False``, zero padding) at
    the visible pairs of ``coords [B, N, P, 2]`` / ``visible [B, N, P]`` (``project_to_cameras`` of ``heights``
    height-major slices of points) on feature maps of the given ``(h, w)``, averaged over the cameras that see each
    point and summed over levels. Interpolation coordinates and weights stay fp32 (a bf16 pixel coordinate is off
    by up to 1 px)."""
    B, N, P = visible.shape
    cells = P // heights
    b, n, p = visible.nonzero(as_tuple=True)  # [V] each
    uv = coords[b, n, p]  # [V, 2] normalised to [-1, 1]
    count = visible.sum(1)  # [B, P]
    share = 1.0 / count[b, p].to(uv.dtype)  # [V]: each seeing camera's share of the point's mean
    all_taps, all_weights, first_row = [], [], 0
    for h, w in level_hw:
        x = (uv[:, 0] + 1.0) * (w / 2.0) - 0.5  # feature-map pixel coordinates, centres at integers
        y = (uv[:, 1] + 1.0) * (h / 2.0) - 0.5
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        x0, y0 = x0.long(), y0.long()
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            for dx, wx in ((0, 1.0 - fx), (1, fx)):
                xi, yi = x0 + dx, y0 + dy
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)  # zero padding outside the map
                all_taps.append(first_row + ((b * N + n) * h + yi.clamp(0, h - 1)) * w + xi.clamp(0, w - 1))
                all_weights.append(torch.where(inside, wx * wy * share, torch.zeros_like(wx)))
        first_row += B * N * h * w
    taps_per_pair = len(all_taps)
    row = (b * cells + p % cells) * heights + p // cells  # [V] cell-major output row
    order = torch.argsort(row, stable=True)
    per_row = torch.bincount(row, minlength=B * P) * taps_per_pair
    return SamplingPlan(taps=torch.stack(all_taps, 1)[order].reshape(-1),
                        weights=torch.stack(all_weights, 1)[order].reshape(-1),
                        bag=row[order].repeat_interleave(taps_per_pair),
                        offsets=torch.cumsum(per_row, 0) - per_row, count=count, by_table_row={})


def _gather(feats: dict[str, Tensor], levels: list[str], plan: SamplingPlan) -> Tensor:
    """Bilinear samples of every level at the plan's visible pairs, averaged over the cameras that see each point
    and summed over levels: ``[B*P, C]`` in the features' dtype, rows in the plan's cell-major order.

    A reference point is seen by one or two of the rig's cameras, so sampling only those does an eighth of
    ``grid_sample``'s work over all cameras, and its backward is one ``embedding_bag`` instead of ``grid_sample``'s
    serial scatter. Feature maps are read as rows of a channels-last ``[B*N*h*w, C]`` view (a copy for other
    layouts); several levels are concatenated into one table."""
    tables = [feats[name].permute(0, 2, 3, 1).reshape(-1, feats[name].shape[1]) for name in levels]
    rows = tables[0] if len(tables) == 1 else torch.cat(tables)
    return _BilinearTaps.apply(rows, plan)


def _sample_dense(feats: dict[str, Tensor], levels: list[str], coords: Tensor, B: int, N: int) -> Tensor:
    """Bilinear samples of every level at ``coords [B, N, P, 2]`` summed over cameras and levels, ``[B, C, P]``
    fp32, written with ``grid_sample`` over every camera (static shapes, ONNX ``GridSample``): the traced form of
    ``_gather``. Invisible points carry coordinates far outside the map and sample exact zeros."""
    P = coords.shape[2]
    total: Tensor | None = None
    for name in levels:
        f = feats[name]
        s = F.grid_sample(f.float(), coords.reshape(B * N, P, 1, 2), mode="bilinear", padding_mode="zeros",
                          align_corners=False)  # [B*N, C, P, 1]
        s = s.reshape(B, N, f.shape[1], P).sum(1)
        total = s if total is None else total + s
    assert total is not None
    return total


class BevSampler(nn.Module):
    """Bilinear sampling of camera features at projected BEV reference points (no weights but a 1×1)."""

    def __init__(self, grid: BevGrid, in_channels: int, out_channels: int, heights: list[float], levels: list[str],
                 stride: int = 2, min_depth: float = 0.3):
        super().__init__()
        if not heights:
            raise ValueError("fusion needs at least one reference height")
        self.grid = coarse_grid(grid, stride)
        self.levels = list(levels)
        self.heights = [float(z) for z in heights]
        self.min_depth = min_depth
        centres = self.grid.cell_centres()  # [R, C, 2]
        R, C = self.grid.shape
        z = torch.tensor(self.heights).view(-1, 1, 1, 1).expand(-1, R, C, 1)
        points = torch.cat([centres.expand(len(self.heights), R, C, 2), z], -1)  # [Z, R, C, 3]
        self.register_buffer("points", points.reshape(-1, 3), persistent=False)
        # Normalised ego (x, y) per cell [1, R, C, 2]: CoordConv-style channels so the encoder knows range/bearing.
        coords = centres / torch.tensor([max(map(abs, grid.x_range)), max(map(abs, grid.y_range))])
        self.register_buffer("coords", coords[None], persistent=False)
        n_z = len(self.heights)
        self.reduce = nn.Sequential(nn.Conv2d(in_channels * n_z + n_z + 2, out_channels, 1, bias=False),
                                    nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        # (key, rig values, SamplingPlan) of the last eager call: ``plan``. Not state: never saved or exported.
        self._cached_plan: tuple[tuple, tuple[Tensor | None, ...], SamplingPlan] | None = None

    def _traced(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                image_hw: tuple[int, int], camera_valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """What ``lift`` returns, computed with static shapes for tracing and export: ``grid_sample`` over every
        camera. Height-major, channels first, as ONNX runtimes lay out convolutions."""
        B, N = intrinsics.shape[:2]
        R, C = self.grid.shape
        coords, visible = project_to_cameras(self.points, intrinsics.float(), T_ego_from_cam.float(), image_hw,
                                             self.min_depth, camera_valid)
        count = visible.sum(1)  # [B, P] cameras seeing each point
        total = _sample_dense(feats, self.levels, coords, B, N)  # [B, C, P]
        mean = total / count.clamp(min=1).to(total.dtype)[:, None]
        Z = len(self.heights)
        return mean.reshape(B, -1, Z, R, C), count.reshape(B, Z, R, C).to(mean.dtype)

    def _gathered(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                  image_hw: tuple[int, int], camera_valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """What ``lift`` returns, computed eagerly by ``_gather`` with the rig's ``plan``: cell-major
        ``[B, R, C', Z, C]`` and ``[B, R, C', Z]``."""
        B = intrinsics.shape[0]
        R, C = self.grid.shape
        Z = len(self.heights)
        plan = self.plan(feats, intrinsics, T_ego_from_cam, image_hw, camera_valid)
        cells = _gather(feats, self.levels, plan).reshape(B, R, C, Z, -1)
        return cells, plan.count.reshape(B, Z, R, C).permute(0, 2, 3, 1).to(cells.dtype)

    def lift(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
             image_hw: tuple[int, int], camera_valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Camera-averaged features ``[B, C, Z, R, C']`` (summed over ``levels``; fp32, or bf16 under autocast) and
        the number of cameras that see each reference point ``[B, Z, R, C']``.

        ``camera_valid`` bool ``[B, N]``: a False camera sees nothing -- it contributes no sample and
        leaves the count, so points it never saw are bit-for-bit unchanged and the others average over
        the cameras that remain."""
        if tracing():
            return self._traced(feats, intrinsics, T_ego_from_cam, image_hw, camera_valid)
        cells, count = self._gathered(feats, intrinsics, T_ego_from_cam, image_hw, camera_valid)
        return cells.permute(0, 4, 3, 1, 2), count.permute(0, 3, 1, 2)

    def plan(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor, image_hw: tuple[int, int],
             camera_valid: Tensor | None = None) -> SamplingPlan:
        """The ``SamplingPlan`` of the reference points in this rig (``intrinsics [B, N, 3, 3]``, ``T_ego_from_cam
        [B, N, 4, 4]``, ``camera_valid`` bool ``[B, N]`` or None) on ``feats``' levels.

        The last plan is kept with the values it was built from and returned again while they repeat: a car's rig
        does not change from frame to frame, so streaming, evaluating or training on one rig projects the
        reference points once instead of every frame (BEVPoolv2, Huang & Huang 2022, precomputes its view
        transform's indices for fixed cameras the same way). The key is everything the projection reads, by value,
        not by tensor: a recalibrated camera, another dataset's rig, a per-sample augmentation, or reference
        points or a minimum depth changed in place gets a new plan, bit-identical to what the projection gives
        that input."""
        K, T = intrinsics.float(), T_ego_from_cam.float()
        level_hw = [tuple(feats[name].shape[-2:]) for name in self.levels]
        key = (tuple(image_hw), tuple(level_hw), K.device, float(self.min_depth))
        inputs = (K, T, camera_valid, self.points)
        cached = self._cached_plan
        if cached is not None and cached[0] == key and all(
                _same_values(a, b) for a, b in zip(cached[1], inputs, strict=True)):
            return cached[2]
        coords, visible = project_to_cameras(self.points, K, T, image_hw, self.min_depth, camera_valid)
        plan = _plan(level_hw, coords, visible, len(self.heights))
        rig = tuple(None if t is None else t.detach().clone() for t in inputs)
        self._cached_plan = (key, rig, plan)
        return plan

    def forward(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                image_hw: tuple[int, int], camera_valid: Tensor | None = None) -> Tensor:
        """The reduced BEV map ``[B, out_channels, R, C']``: per cell the height slices stacked into channels
        (channel ``c * Z + z``: the 1×1 conv learns what each height means), the share of cameras that see each
        height and the cell's normalised ego (x, y)."""
        n = intrinsics.shape[1]
        if tracing():
            fused, count = self._traced(feats, intrinsics, T_ego_from_cam, image_hw, camera_valid)
            B, ch, Z, R, C = fused.shape
            x = torch.cat([fused.reshape(B, ch * Z, R, C), count / n,
                           self.coords.permute(0, 3, 1, 2).expand(B, -1, -1, -1).to(fused.dtype)], 1)
            return self.reduce(x)
        cells, count = self._gathered(feats, intrinsics, T_ego_from_cam, image_hw, camera_valid)
        B, R, C, Z, ch = cells.shape
        # The same channels, built channels-last from the cell-major samples: each cell's [Z, C] block is transposed
        # where it lies in memory, where a transpose to [B, C, Z, R, C'] strides across the whole map (base preset,
        # one frame: 13 ms for that copy alone).
        x = torch.cat([cells.transpose(-1, -2).reshape(B, R, C, ch * Z), count / n,
                       self.coords.expand(B, -1, -1, -1).to(cells.dtype)], -1)
        return self.reduce(x.permute(0, 3, 1, 2))


class ResBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3×3 conv-BN with ReLU, 1×1 projection shortcut when the
    shape changes; ``[B, cin, H, W]`` → ``[B, cout, H/stride, W/stride]``."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if cin != cout or stride != 1 else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class BevEncoder(nn.Module):
    """Residual blocks at fusion resolution, one stride-2 stage for context (a vehicle spans several
    cells; lanes and road edges run across the whole grid), merged back, then upsampled to the grid."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, blocks: int, upsample: int):
        super().__init__()
        self.stage0 = nn.Sequential(*[ResBlock(in_channels if i == 0 else channels, channels) for i in range(blocks)])
        self.stage1 = nn.Sequential(*[ResBlock(channels if i == 0 else 2 * channels, 2 * channels, 2 if i == 0 else 1)
                                      for i in range(blocks)])
        self.lateral = nn.Conv2d(2 * channels, channels, 1)
        self.upsample = upsample
        self.out = nn.Sequential(nn.Conv2d(channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels),
                                 nn.ReLU(inplace=True))

    def encode(self, x: Tensor) -> Tensor:
        """``[B, in_channels, h, w]`` → ``[B, out_channels, h, w]`` at fusion resolution."""
        x0 = self.stage0(x)
        x1 = self.stage1(x0)
        return self.out(x0 + F.interpolate(self.lateral(x1), size=x0.shape[-2:], mode="bilinear", align_corners=False))

    def to_grid(self, x: Tensor, out_hw: tuple[int, int]) -> Tensor:
        """Upsample a fusion-resolution map to the BEV grid ``out_hw``."""
        # The last conv runs at fusion resolution and the result is upsampled: at full grid resolution it
        # cost more than the whole trunk (128 ch on 128×128 cells); the heads' own convs refine at full res.
        if self.upsample > 1:
            x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor, out_hw: tuple[int, int]) -> Tensor:
        return self.to_grid(self.encode(x), out_hw)


class BevFusion(nn.Module):
    """Sampler (+ optional video memory) + BEV encoder: camera FPN dict → ``[B, bev_channels, R, C]``."""

    def __init__(self, grid: BevGrid, camera_channels: int, bev_channels: int, heights: list[float],
                 levels: list[str], stride: int = 2, channels: int = 64, encoder_blocks: int = 2,
                 temporal: dict | None = None, min_depth: float = 0.3):
        super().__init__()
        self.grid = grid
        self.stride = stride
        self.sampler = BevSampler(grid, camera_channels, channels, heights, levels, stride, min_depth)
        # ``temporal``: TemporalMemory keyword arguments (``model.config.TemporalConfig``), None = single frame.
        self.temporal = TemporalMemory(self.sampler.grid, bev_channels, **temporal) if temporal is not None else None
        self.encoder = BevEncoder(channels, channels, bev_channels, encoder_blocks, stride)

    @property
    def levels(self) -> list[str]:
        """FPN levels fusion reads (a feature cache for BEV heads needs only these)."""
        return list(self.sampler.levels)

    def forward(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                image_hw: tuple[int, int], camera_valid: Tensor | None = None) -> Tensor:
        """One frame without history (a temporal model runs from the reset state). ``camera_valid`` bool
        ``[B, N]`` masks failed cameras (see ``BevSampler.lift``)."""
        bev = self.encoder.encode(self.sampler(feats, intrinsics, T_ego_from_cam, image_hw, camera_valid))
        if self.temporal is not None:
            B = bev.shape[0]
            eye = torch.eye(4, device=bev.device).expand(B, 4, 4)
            bev, _ = self.temporal(bev, eye, torch.zeros(B, device=bev.device),
                                   self.temporal.init_state(B, bev.device))
        return self.encoder.to_grid(bev, self.grid.shape)

    def forward_step(self, feats: dict[str, Tensor], intrinsics: Tensor, T_ego_from_cam: Tensor,
                     image_hw: tuple[int, int], T_world_from_ego: Tensor, timestamp: Tensor,
                     state: TemporalState, camera_valid: Tensor | None = None) -> tuple[Tensor, TemporalState]:
        """One frame of a sequence: BEV map and the memory's new state (``hydranet.model.temporal``)."""
        if self.temporal is None:
            raise ValueError("this model has no video memory (model.fusion.temporal is off): use forward()")
        bev = self.encoder.encode(self.sampler(feats, intrinsics, T_ego_from_cam, image_hw, camera_valid))
        bev, state = self.temporal(bev, T_world_from_ego, timestamp, state)
        return self.encoder.to_grid(bev, self.grid.shape), state
