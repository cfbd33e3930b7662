"""Optional temporal fusion: the previous frame's BEV features, warped into the current ego frame.

The previous BEV map lives in the previous ego frame. For every current cell centre ``p`` we look
up ``T_prev_from_curr @ p`` in the previous map (``grid_sample``), which compensates ego motion
exactly for the static world; moving objects are left for the convolution to reason about, as in
BEVDet4D / BEVFormer's temporal self-attention without learned offsets. Cells that come from
outside the previous grid are marked invalid and get zeros plus a mask channel.

When there is no history (first frame, or training without sequences) the module sees zeros and an
all-invalid mask, so a model trained without history still runs, and one trained with random
history dropout handles both. Off by default (``FusionConfig.temporal``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydranet.geometry import BevGrid


def warp_bev(prev_bev: Tensor, T_prev_from_curr: Tensor, grid: BevGrid) -> tuple[Tensor, Tensor]:
    """Resample ``prev_bev [B, C, R, C']`` (on ``grid`` in the previous ego frame) at the current
    frame's cell centres; returns the warped map and a validity mask ``[B, 1, R, C']``."""
    B = prev_bev.shape[0]
    R, C = grid.shape
    centres = grid.cell_centres(prev_bev.dtype).to(prev_bev.device).reshape(-1, 2)  # [P, 2] ego x, y
    pts = torch.cat([centres, torch.zeros_like(centres[:, :1])], -1)  # on the ground plane
    T = T_prev_from_curr.to(prev_bev.dtype)
    p_prev = pts[None] @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]  # [B, P, 3]
    row, col = grid.metres_to_index(p_prev[..., 0], p_prev[..., 1])
    gx = col / C * 2.0 - 1.0
    gy = row / R * 2.0 - 1.0
    sample = torch.stack([gx, gy], -1).reshape(B, R, C, 2)
    warped = F.grid_sample(prev_bev, sample, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = ((gx.abs() <= 1.0) & (gy.abs() <= 1.0)).reshape(B, 1, R, C).to(prev_bev.dtype)
    return warped * valid, valid


class TemporalFusion(nn.Module):
    """``concat(current, warped previous, valid) → 3×3 conv`` added residually to the current map."""

    def __init__(self, grid: BevGrid, channels: int):
        super().__init__()
        self.grid = grid
        self.fuse = nn.Sequential(nn.Conv2d(2 * channels + 1, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, bev: Tensor, prev_bev: Tensor | None, T_prev_from_curr: Tensor | None) -> Tensor:
        if prev_bev is None:
            warped, valid = torch.zeros_like(bev), torch.zeros_like(bev[:, :1])
        else:
            if T_prev_from_curr is None:
                raise ValueError("temporal fusion: prev_bev given without T_prev_from_curr [B, 4, 4]")
            if prev_bev.shape != bev.shape:
                raise ValueError(f"temporal fusion: prev_bev {tuple(prev_bev.shape)} != current {tuple(bev.shape)}")
            warped, valid = warp_bev(prev_bev, T_prev_from_curr, self.grid)
        return bev + self.fuse(torch.cat([bev, warped, valid], 1))
