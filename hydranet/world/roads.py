"""Analytic road layout: a main road (straight, then a constant-curvature arc) and an optional
perpendicular crossing road, with lanes, markings, curbs and sidewalks.

Everything is a closed-form function of a ground point, so the renderer can ask "what paint is here"
for any hit point and the BEV rasteriser can ask the same for any cell centre — no meshes, no
textures to sample, exact labels at any resolution.

Road coordinates: ``u`` = arc length along the main road's centre line, ``d`` = signed lateral offset
(+ left of the direction of increasing ``u``). Traffic drives on the right: the ego's direction
(increasing ``u``) owns ``d in [-n W, 0]``, oncoming traffic ``d in [0, n W]``.
The crossing road (if any) is the world line ``x = cross_u``; its coordinates are ``u2 = y`` and
``d2 = cross_u - x`` (left of a traveller heading +y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LANE_WIDTH = 3.5
SIDEWALK = 3.0
CURB = 0.25  # width of the curb strip just outside the road edge (the "road edge" lane label)
_LINE_W = 0.15  # white line width
_CENTRE_GAP = 0.15  # double yellow centre lines sit at +-CENTRE_GAP
DASH, PERIOD = 3.0, 9.0  # dashed lines: 3 m paint every 9 m
_EDGE_INSET = 0.3  # solid edge line distance inside the road edge
STOP_W = 0.5  # stop-line width
STOP_SETBACK = 4.0  # stop line distance before the crossing road's edge
_CROSSWALK = (0.6, 3.4)  # crosswalk band: metres before the crossing road's edge (start, end)

# Surface ids (before semantic mapping)
ROAD, SIDEWALK_SURF, TERRAIN = 0, 1, 2


@dataclass(frozen=True)
class RoadLayout:
    """Main road (straight, then an arc of signed ``curvature`` 1/m from ``curve_start``) with ``lanes``
    per direction, and an optional crossing road at world ``x = cross_u``; all lengths in metres.
    See the module docstring for the road coordinates (u, d).
    """
    lanes: int  # lanes per direction on the main road
    curve_start: float  # u where the arc begins (math.inf: straight road)
    curvature: float  # 1/m, signed, + turns left
    cross_u: float | None = None  # u (= world x) of the crossing road's centre line
    cross_lanes: int = 1

    @property
    def half_width(self) -> float:
        """Main road half-width in metres (``lanes`` × ``LANE_WIDTH``)."""
        return self.lanes * LANE_WIDTH

    @property
    def cross_half_width(self) -> float:
        """Crossing road half-width in metres (``cross_lanes`` × ``LANE_WIDTH``)."""
        return self.cross_lanes * LANE_WIDTH

    @property
    def stop_u(self) -> float:
        """u of the ego-direction stop line's centre (before the crossing road)."""
        assert self.cross_u is not None
        return self.cross_u - self.cross_half_width - STOP_SETBACK

    def lane_centre(self, lane: int) -> float:
        """Lateral offset of forward lane ``lane`` (0 = next to the centre line)."""
        return -(lane + 0.5) * LANE_WIDTH

    # ---- frames ----------------------------------------------------------------------------
    def pose(self, u: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """World (x, y, heading) in metres and radians of road coordinates (u, d), float64 tensors."""
        u, d = torch.as_tensor(u, dtype=torch.float64), torch.as_tensor(d, dtype=torch.float64)
        k = self.curvature
        if not math.isfinite(self.curve_start) or k == 0.0:
            return u, d, torch.zeros_like(u)
        a = torch.clamp(u - self.curve_start, min=0.0)
        th = k * a
        on_arc = u > self.curve_start
        xa = self.curve_start + torch.sin(th) / k - d * torch.sin(th)
        ya = (1 - torch.cos(th)) / k + d * torch.cos(th)
        return torch.where(on_arc, xa, u), torch.where(on_arc, ya, d), torch.where(on_arc, th, torch.zeros_like(th))

    def to_road(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Road coordinates (u, d) of world points (nearest point of the centre line)."""
        k = self.curvature
        if not math.isfinite(self.curve_start) or k == 0.0:
            return x, y
        sg = 1.0 if k > 0 else -1.0
        cx, cy = self.curve_start, 1.0 / k
        rx, ry = x - cx, y - cy
        th = torch.atan2(sg * rx, -sg * ry)
        rho = torch.sqrt(rx * rx + ry * ry)
        ua = self.curve_start + th / k
        da = 1.0 / k - sg * rho
        on_arc = x > self.curve_start
        return torch.where(on_arc, ua, x), torch.where(on_arc, da, y)

    # ---- paint and surfaces ----------------------------------------------------------------
    def ground(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Surface and paint at world ground points.

        Returns ``surface`` (ROAD/SIDEWALK_SURF/TERRAIN), ``curb`` (bool), the signed distance (m,
        negative inside) to the nearest ``dashed``, ``solid`` and ``other`` (stop line, crosswalk)
        paint, ``yellow`` (the nearest paint is a yellow centre line), and road coords ``u``, ``d``.
        """
        u, d = self.to_road(x, y)
        hw, n = self.half_width, self.lanes
        ad = d.abs()
        big = torch.full_like(x, 1e3)
        on_main = ad < hw
        main_side = ad < hw + SIDEWALK
        if self.cross_u is not None:
            d2 = self.cross_u - x
            ad2 = d2.abs()
            hw2 = self.cross_half_width
            on_cross = ad2 < hw2
            cross_side = ad2 < hw2 + SIDEWALK
            in_band = ad2 < hw2  # curbs stop at the crossing road, lines at the stop line
            in_stop = ad2 < hw2 + STOP_SETBACK - STOP_W * 0.5
        else:
            on_cross = cross_side = in_band = in_stop = torch.zeros_like(on_main)
            d2 = ad2 = big
            hw2 = 0.0
        road = on_main | on_cross
        surface = torch.where(road, ROAD, torch.where(main_side | cross_side, SIDEWALK_SURF, TERRAIN))
        curb = ~road & (((ad - hw < CURB) & ~in_band) | ((ad2 - hw2 < CURB) & (ad >= hw)))

        # Main road lines (suppressed inside the crossing band).
        centre = (ad - _CENTRE_GAP).abs() - _LINE_W * 0.4
        edge = (ad - (hw - _EDGE_INSET)).abs() - _LINE_W * 0.5
        solid = torch.minimum(centre, edge)
        if n >= 2:
            k = torch.clamp(torch.round(ad / LANE_WIDTH), 1, n - 1)
            lat = (ad - k * LANE_WIDTH).abs() - _LINE_W * 0.5
            along = (torch.remainder(u, PERIOD) - DASH * 0.5).abs() - DASH * 0.5
            dashed = torch.maximum(lat, along)
        else:
            dashed = big
        outside_main = ~on_main | in_stop
        solid = torch.where(outside_main, big, solid)
        dashed = torch.where(outside_main, big, dashed)
        yellow = (centre <= edge) & on_main
        other = big
        if self.cross_u is not None:
            # Crossing road: double yellow centre, dashed dividers, outside the main road box.
            c2 = (ad2 - _CENTRE_GAP).abs() - _LINE_W * 0.4
            outside_cross = ~on_cross | (ad < hw + STOP_SETBACK - STOP_W * 0.5)
            if self.cross_lanes >= 2:
                k2 = torch.clamp(torch.round(ad2 / LANE_WIDTH), 1, self.cross_lanes - 1)
                lat2 = (ad2 - k2 * LANE_WIDTH).abs() - _LINE_W * 0.5
                along2 = (torch.remainder(y, PERIOD) - DASH * 0.5).abs() - DASH * 0.5
                dashed = torch.where(outside_cross, dashed, torch.maximum(lat2, along2))
            solid = torch.where(outside_cross, solid, c2)
            yellow = yellow | (~outside_cross)
            # Stop lines (both directions) and zebra crosswalks on all four arms.
            dist_edge = ad2 - hw2  # metres from the crossing road's edge, along the main road
            side = torch.where(d2 > 0, d, -d)  # < 0: the lanes approaching the crossing
            stop = torch.maximum((dist_edge - STOP_SETBACK).abs() - STOP_W * 0.5,
                                 torch.maximum(side, -side - hw))
            zebra = (torch.remainder(d, 1.2) - 0.6).abs() - 0.3
            band = (dist_edge - 0.5 * (_CROSSWALK[0] + _CROSSWALK[1])).abs() - 0.5 * (_CROSSWALK[1] - _CROSSWALK[0])
            walk = torch.maximum(torch.maximum(band, zebra), ad - hw + 0.3)
            dist_edge2 = ad - hw
            zebra2 = (torch.remainder(d2, 1.2) - 0.6).abs() - 0.3
            band2 = (dist_edge2 - 0.5 * (_CROSSWALK[0] + _CROSSWALK[1])).abs() - 0.5 * (_CROSSWALK[1] - _CROSSWALK[0])
            walk2 = torch.maximum(torch.maximum(band2, zebra2), ad2 - hw2 + 0.3)
            side2 = torch.where(d < 0, d2, -d2)  # < 0: crossing-road lanes approaching the main road
            stop2 = torch.maximum((dist_edge2 - STOP_SETBACK).abs() - STOP_W * 0.5,
                                  torch.maximum(side2, -side2 - hw2))
            other = torch.minimum(torch.minimum(torch.minimum(stop, stop2), walk), walk2)
            other = torch.where(road, other, big)
        yellow = yellow & (solid <= other) & (solid <= dashed)
        return {"surface": surface, "curb": curb, "dashed": dashed, "solid": solid, "other": other,
                "yellow": yellow, "u": u, "d": d}

    # ---- lane lines as polylines -----------------------------------------------------------
    def lines(self) -> list[tuple[float, int]]:
        """(lateral offset, kind) of every lane line of the main road; kind as ``LANE_KINDS``."""
        hw = self.half_width
        out = [(0.0, 2), (hw - _EDGE_INSET, 2), (-(hw - _EDGE_INSET), 2), (hw, 3), (-hw, 3)]
        for k in range(1, self.lanes):
            out += [(k * LANE_WIDTH, 1), (-k * LANE_WIDTH, 1)]
        return out

    def line_spans(self, u0: float, u1: float) -> list[tuple[float, float]]:
        """Pieces of [u0, u1] where main-road lines exist (they stop at the crossing road)."""
        if self.cross_u is None:
            return [(u0, u1)]
        gap = self.cross_half_width + STOP_SETBACK - STOP_W * 0.5
        a, b = self.cross_u - gap, self.cross_u + gap
        return [(lo, hi) for lo, hi in ((u0, min(u1, a)), (max(u0, b), u1)) if hi - lo > 2.0]
