"""Appearance: procedural noise, surface albedo per material, sky, lights and fog.

Colours are display-space RGB in [0, 1]. Lighting is a cheap physically-flavoured model — ambient sky
plus a sun term by day, headlights and street lamps by night, emissive lamps everywhere — chosen to
give the cues perception networks rely on (shading, contrast, glare, fog) at a few ms per frame.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hydranet.world.agents import (
    MAT_BUILDING,
    MAT_CABIN,
    MAT_CONE,
    MAT_LAMP,
    MAT_PAINT,
    MAT_SIGNAL,
)

# lighting -> (ambient rgb, sun rgb, sky zenith, sky horizon, haze extinction per metre)
LIGHTING = {
    "day": ((0.50, 0.53, 0.60), (0.62, 0.58, 0.50), (0.28, 0.47, 0.80), (0.72, 0.80, 0.90), 0.0012),
    "dusk": ((0.26, 0.22, 0.26), (0.75, 0.42, 0.22), (0.20, 0.20, 0.40), (0.95, 0.55, 0.32), 0.0018),
    "night": ((0.035, 0.038, 0.055), (0.0, 0.0, 0.0), (0.005, 0.007, 0.02), (0.04, 0.045, 0.07), 0.0012),
}
_LAMP_COLOURS = torch.tensor([[1.0, 0.12, 0.08], [1.0, 0.72, 0.05], [0.15, 1.0, 0.45]])


def _hash2(x: Tensor, y: Tensor) -> Tensor:
    """Pseudo-random value in [0, 1) per integer lattice point (the classic sine hash)."""
    h = torch.sin(x * 12.9898 + y * 78.233) * 43758.5453
    return h - torch.floor(h)


def _value_noise(x: Tensor, y: Tensor) -> Tensor:
    """Smooth value noise in [0, 1) with unit lattice spacing."""
    ix, iy = torch.floor(x), torch.floor(y)
    fx, fy = x - ix, y - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _hash2(ix, iy), _hash2(ix + 1, iy)
    c, d = _hash2(ix, iy + 1), _hash2(ix + 1, iy + 1)
    return torch.lerp(torch.lerp(a, b, fx), torch.lerp(c, d, fx), fy)


def ground_albedo(surface: Tensor, curb: Tensor, paint: Tensor, yellow: Tensor, x: Tensor, y: Tensor,
                  u: Tensor, d: Tensor) -> Tensor:
    """Albedo ``[G, 3]`` of ground points: asphalt, paint, concrete sidewalk, grass."""
    fine = _value_noise(x * 4.0, y * 4.0)
    coarse = _value_noise(x * 0.25 + 17.0, y * 0.25 - 5.0)
    asphalt = (0.25 + 0.05 * fine + 0.06 * coarse)[:, None] * torch.tensor([1.0, 1.0, 1.04])
    white = torch.tensor([0.86, 0.86, 0.84])
    yel = torch.tensor([0.88, 0.68, 0.16])
    paint_col = torch.where(yellow[:, None], yel, white) * (0.9 + 0.1 * fine)[:, None]
    road = torch.lerp(asphalt, paint_col, paint[:, None])
    # Sidewalk: concrete slabs with darker joints every 1.5 m along the road.
    joint = ((torch.remainder(u, 1.5) < 0.06) | (torch.remainder(d, 1.5) < 0.06)).float()
    concrete = ((0.58 + 0.06 * fine - 0.12 * joint)[:, None] * torch.tensor([1.0, 0.98, 0.94]))
    concrete = torch.where(curb[:, None], torch.tensor([0.72, 0.72, 0.70]), concrete)
    grass = torch.stack([0.20 + 0.08 * coarse, 0.32 + 0.10 * fine * coarse + 0.05 * coarse, 0.12 + 0.04 * fine], 1)
    out = torch.where((surface == 0)[:, None], road, torch.where((surface == 1)[:, None], concrete, grass))
    return out


def prim_albedo(material: Tensor, colour: Tensor, extra: Tensor, local: Tensor, axis: Tensor, sign: Tensor,
                size: Tensor, centre_z: Tensor, ident: Tensor, night: float, refl: Tensor, lighting: str
                ) -> tuple[Tensor, Tensor]:
    """(albedo, emission) ``[K, 3]`` for box hits given each hit's local point and face.

    Each material is shaded on its own subset of hits (index_select / index_copy_), so a pixel pays
    only for its own material's pattern. ``refl`` are reflected view rays (for glass)."""
    albedo = colour.clone()
    emit = torch.zeros_like(colour)
    lx, ly, lz = local.unbind(1)
    hx, hy, hz = (size * 0.5).unbind(1)

    def subset(mask: Tensor):
        i = mask.nonzero().squeeze(1)
        return i, (lambda t: t.index_select(0, i))

    # Vehicle body: headlights on the front face, tail lights on the back, darker lower sill.
    i, take = subset((material == MAT_PAINT) & (extra == 1))
    if i.numel():
        x, y, z, ax, sg, hy_, hz_ = (take(t) for t in (lx, ly, lz, axis, sign, hy, hz))
        a = take(colour)
        band = (y.abs() > hy_ - 0.5) & (y.abs() < hy_ - 0.08) & (z > hz_ - 0.32) & (z < hz_ - 0.06) & (ax == 0)
        head, tail = band & (sg > 0), band & (sg < 0)
        a = torch.where(((ax != 2) & (z < -hz_ + 0.12))[:, None], a * 0.45, a)
        a = torch.where(head[:, None], torch.tensor([0.9, 0.9, 0.85]), a)
        a = torch.where(tail[:, None], torch.tensor([0.55, 0.04, 0.04]), a)
        e = head[:, None].float() * torch.tensor([1.0, 0.95, 0.8]) * (0.25 + 2.2 * night)
        e = e + tail[:, None].float() * torch.tensor([1.0, 0.08, 0.05]) * (0.1 + 1.2 * night)
        albedo.index_copy_(0, i, a)
        emit.index_copy_(0, i, e)

    # Cabin: glass on the sides, pillars at the ends, painted roof.
    i, take = subset(material == MAT_CABIN)
    if i.numel():
        x, y, z, ax, hx_, hy_, hz_ = (take(t) for t in (lx, ly, lz, axis, hx, hy, hz))
        pillar = ((ax == 1) & ((x.abs() > hx_ - 0.14) | (z < -hz_ + 0.05))) | ((ax == 0) & (y.abs() > hy_ - 0.1))
        glass = (ax != 2) & ~pillar
        glass_col = torch.tensor([0.07, 0.09, 0.12]) + 0.35 * _sky_gradient(take(refl), lighting)
        albedo.index_copy_(0, i, torch.where(glass[:, None], glass_col, take(colour)))

    # Buildings: facade texture, a window grid on walls (some lit at night), dark flat roofs.
    i, take = subset(material == MAT_BUILDING)
    if i.numel():
        x, y, z, ax, sg, hz_, cz, ids = (take(t) for t in (lx, ly, lz, axis, sign, hz, centre_z, ident))
        side = ax != 2
        along = torch.where(ax == 0, y, x) + 100.0
        zg = z + cz
        cell_a, cell_z = torch.floor(along / 3.0), torch.floor(zg / 3.2)
        fa, fz = along / 3.0 - cell_a, zg / 3.2 - cell_z
        window = side & (fa > 0.22) & (fa < 0.78) & (fz > 0.3) & (fz < 0.82) & (zg > 1.2) & (z < hz_ - 0.6)
        lit = window & (_hash2(cell_a + ids * 13.0 + ax * 5.0, cell_z + sg * 3.0) < 0.35)
        a = take(colour) * (0.9 + 0.16 * _value_noise(along * 1.5 + ids * 7.0, zg * 1.5))[:, None]
        glass = torch.tensor([0.10, 0.12, 0.15]) + 0.4 * _sky_gradient(take(refl), lighting)
        a = torch.where(window[:, None], glass, a)
        a = torch.where((~side)[:, None], a * 0.55, a)
        albedo.index_copy_(0, i, a)
        emit.index_copy_(0, i, lit[:, None].float() * torch.tensor([1.0, 0.78, 0.42]) * 0.75 * night)

    # Street lamp heads glow downwards at night.
    if night > 0:
        i, take = subset((material == MAT_LAMP) & (axis == 2) & (sign < 0))
        emit.index_copy_(0, i, torch.tensor([1.0, 0.88, 0.62]).expand(i.numel(), 3) * 3.0 * night)

    # Signals: three lamps on the face towards -x; the lit one is the light's state.
    i, take = subset((material == MAT_SIGNAL) & (axis == 0) & (sign < 0))
    if i.numel():
        y, z, st = take(ly), take(lz), take(extra)
        slot = torch.round(-z / 0.31).clamp(-1, 1) + 1  # 0 top (red) .. 2 bottom (green)
        lens = (y ** 2 + (z + (slot - 1) * 0.31) ** 2) < 0.12 ** 2
        on = lens & (slot.long() == st)
        lamp_col = _LAMP_COLOURS[slot.long()]
        albedo.index_copy_(0, i, torch.where(lens[:, None], lamp_col * 0.15, take(colour)))
        emit.index_copy_(0, i, on[:, None].float() * lamp_col * 2.2)

    # Cones: a reflective white band.
    i, take = subset((material == MAT_CONE) & (lz.abs() < 0.06) & (hz < 0.2))
    albedo.index_copy_(0, i, torch.tensor([0.92, 0.92, 0.92]).expand(i.numel(), 3))
    return albedo, emit


def _sky_gradient(dirs: Tensor, lighting: str) -> Tensor:
    """Cheap sky colour (no sun, clouds or stars) for reflections in glass."""
    _, _, zen, hor, _ = LIGHTING[lighting]
    e = (dirs[:, 2] / dirs.norm(dim=1)).clamp(min=0.0)
    return torch.lerp(torch.tensor(hor), torch.tensor(zen), torch.sqrt(e)[:, None])


def sky(dirs: Tensor, lighting: str, sun: tuple[float, float, float], distant_lights: bool) -> Tensor:
    """Sky colour ``[S, 3]`` for world ray directions (not normalised)."""
    _, _, zen, hor, _ = LIGHTING[lighting]
    n = dirs / dirs.norm(dim=1, keepdim=True)
    e = n[:, 2].clamp(min=0.0)
    g = torch.sqrt(e).clamp(max=1.0)[:, None]
    col = torch.lerp(torch.tensor(hor), torch.tensor(zen), g)
    if lighting != "night":
        s = torch.tensor(sun, dtype=n.dtype)
        cos = (n * s).sum(1)
        glare = cos.clamp(min=0) ** 64 * 0.5 + (cos > 0.9993).float()
        col = col + torch.tensor([1.0, 0.9, 0.7]) * glare[:, None]
        # Clouds: noise on the sky dome projected to a plane.
        pz = e.clamp(min=0.05)
        cloud = _value_noise(n[:, 0] / pz * 2.0, n[:, 1] / pz * 2.0) * _value_noise(n[:, 0] / pz * 0.7 + 3.0,
                                                                                 n[:, 1] / pz * 0.7)
        cloud = ((cloud - 0.25) * 2.0).clamp(0, 1) * ((e - 0.03) / 0.12).clamp(0, 1)  # none at the horizon
        white = torch.tensor([0.95, 0.95, 0.97]) if lighting == "day" else torch.tensor([0.9, 0.6, 0.5])
        col = torch.lerp(col, white.expand_as(col), (cloud * 0.7)[:, None])
    else:
        az = torch.atan2(n[:, 1], n[:, 0])
        star = _hash2(torch.floor(az * 400.0), torch.floor(e * 400.0)) > 0.996
        col = col + (star & (e > 0.1)).float()[:, None] * 0.5
        if distant_lights:
            cell = torch.floor(az * 180.0 / math.pi * 3.0)
            h = _hash2(cell, torch.floor(e * 900.0))
            city = (e < 0.025) & (h > 0.93)
            col = col + city.float()[:, None] * torch.tensor([1.0, 0.8, 0.5]) * (0.4 + h - 0.93)[:, None] * 4.0
    return col
