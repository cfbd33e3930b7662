"""Soft ground shadows under agents: contact darkening (ambient occlusion) and the sun's cast shadow.

Both are rasterised into a small world-aligned grid around the ego once per frame (a few windows of
a few hundred cells per agent), then looked up by every ground hit with one gather — far cheaper
than casting a shadow ray per pixel, and enough for the cue that matters: objects sit on the road.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hydranet.world.scene import Frame

_CELL = 0.2  # metres
_EXTENT = 64.0  # half-size of the shadow grid around the ego


def _rect_mask(xs: Tensor, ys: Tensor, cx: float, cy: float, yaw: float, hl: float, hw: float, soft: float) -> Tensor:
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dy = xs - cx, ys - cy
    lx, ly = (c * dx + s * dy).abs(), (-s * dx + c * dy).abs()
    return ((hl + soft - lx) / soft).clamp(0, 1) * ((hw + soft - ly) / soft).clamp(0, 1)


def _swept_rect(xs: Tensor, ys: Tensor, cx: float, cy: float, yaw: float, hl: float, hw: float, sx: float,
                sy: float) -> Tensor:
    """1 where the rectangle swept along (sx, sy) covers the point: some f in [0, 1] puts the point
    inside the rectangle moved by f * (sx, sy) (interval intersection per axis, closed form)."""
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dy = xs - cx, ys - cy
    u, v = c * dx + s * dy, -s * dx + c * dy
    su, sv = c * sx + s * sy, -s * sx + c * sy
    lo, hi = torch.zeros_like(u), torch.ones_like(u)
    for p, d, half in ((u, su, hl), (v, sv, hw)):
        if abs(d) < 1e-6:
            inside = (p.abs() <= half).float()
            lo, hi = lo + (1 - inside) * 2, hi
            continue
        a, b = (p - half) / d, (p + half) / d
        lo, hi = torch.maximum(lo, torch.minimum(a, b)), torch.minimum(hi, torch.maximum(a, b))
    return (hi >= lo).float()


def shadow_lookup(frame: Frame, sun: tuple[float, float, float], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(ambient occlusion, sun shadow) in [0, 1] at world ground points ``x, y``."""
    ex, ey, _ = frame.ego
    size = round(2 * _EXTENT / _CELL)
    x0, y0 = ex - _EXTENT, ey - _EXTENT
    ao = torch.zeros(size, size)
    sh = torch.zeros(size, size)
    sun_up = sun[2] > 0.02
    reach = min(12.0, 1.0 / max(sun[2], 1e-3))  # shadow length per metre of height
    for a, (ax, ay, yaw) in frame.agents:
        if a.kind == "traffic_light":
            continue
        l, w, h = a.size
        soft = 0.45 if a.kind in ("car", "truck", "bus") else 0.25
        sx, sy = (-sun[0] * reach * h, -sun[1] * reach * h) if sun_up else (0.0, 0.0)
        pad = soft + 0.5 * math.hypot(l, w)
        lo_x, hi_x = min(ax, ax + sx) - pad, max(ax, ax + sx) + pad
        lo_y, hi_y = min(ay, ay + sy) - pad, max(ay, ay + sy) + pad
        i0, i1 = max(0, int((lo_x - x0) / _CELL)), min(size, int((hi_x - x0) / _CELL) + 1)
        j0, j1 = max(0, int((lo_y - y0) / _CELL)), min(size, int((hi_y - y0) / _CELL) + 1)
        if i1 <= i0 or j1 <= j0:
            continue
        xs = (x0 + (torch.arange(i0, i1, dtype=torch.float32) + 0.5) * _CELL)[:, None]
        ys = (y0 + (torch.arange(j0, j1, dtype=torch.float32) + 0.5) * _CELL)[None, :]
        blob = _rect_mask(xs, ys, ax, ay, yaw, l / 2, w / 2, soft)
        ao[i0:i1, j0:j1] = torch.maximum(ao[i0:i1, j0:j1], blob)
        if sun_up:
            sh[i0:i1, j0:j1] = torch.maximum(sh[i0:i1, j0:j1], _swept_rect(xs, ys, ax, ay, yaw, l / 2, w / 2, sx, sy))
    i = torch.floor((x - x0) / _CELL).long()
    j = torch.floor((y - y0) / _CELL).long()
    inside = (i >= 0) & (i < size) & (j >= 0) & (j < size)
    flat = torch.where(inside, i * size + j, torch.zeros_like(i))
    keep = inside.float()
    return ao.reshape(-1).index_select(0, flat) * keep, sh.reshape(-1).index_select(0, flat) * keep


def lamp_lookup(frame: Frame, x: Tensor, y: Tensor, cell: float = 0.4) -> Tensor:
    """Street-lamp irradiance on the ground at world ``x, y`` (inverse-square pools under each lamp),
    rasterised once per frame on a coarse grid and gathered, instead of per pixel per lamp."""
    ex, ey, _ = frame.ego
    size = round(2 * _EXTENT / cell)
    x0, y0 = ex - _EXTENT, ey - _EXTENT
    gx = (x0 + (torch.arange(size, dtype=torch.float32) + 0.5) * cell)[:, None]
    gy = (y0 + (torch.arange(size, dtype=torch.float32) + 0.5) * cell)[None, :]
    m = torch.zeros(size, size)
    for lx, ly, lz in frame.lamps:
        d2 = (gx - lx) ** 2 + (gy - ly) ** 2 + lz * lz
        m += 2.0 * (55.0 / (55.0 + d2)) ** 2 * (lz / d2.sqrt())
    i = torch.floor((x - x0) / cell).long()
    j = torch.floor((y - y0) / cell).long()
    inside = (i >= 0) & (i < size) & (j >= 0) & (j < size)
    flat = torch.where(inside, i * size + j, torch.zeros_like(i))
    return m.reshape(-1).index_select(0, flat) * inside.float()
