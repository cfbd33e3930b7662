"""Scene generation: one scene per ``(seed, scene index)``, drawn from a string-seeded RNG.

A scene is a road layout, a lighting/fog condition, the ego's analytic motion, agents with analytic
motion and static scenery (buildings, street lamps, signal poles). ``Scene.frame(t)`` evaluates it at
one instant — nothing is simulated step by step, so every frame is computable alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hydranet.world.agents import (
    LIGHT_STATE_IDS,
    MAT_BUILDING,
    MAT_LAMP,
    MAT_METAL,
    MAT_PAINT,
    MAT_SIGNAL,
    SEM,
    Agent,
    Prim,
    RoadMotion,
    StaticMotion,
    signal_prims,
)
from hydranet.world.config import WorldConfig
from hydranet.world.extras import add_extras
from hydranet.world.populate import populate
from hydranet.world.roads import CURB, LANE_WIDTH, SIDEWALK, STOP_SETBACK, STOP_W, RoadLayout

EGO_SIZE = (4.7, 1.9, 1.5)  # l, w, h
EGO_CENTRE = 1.45  # box centre ahead of the rear axle (the ego origin)
_EGO_FRONT = EGO_CENTRE + EGO_SIZE[0] / 2


@dataclass
class Scene:
    """One generated sequence, ``duration`` seconds long: road layout, lighting/fog/sun, the ego's
    analytic motion and ``mode``, all agents, static world prims (buildings, lamp posts, signal
    housings) and street lamps. All positions are in the world frame (metres); any time ``t`` is computable on its own.
    """
    index: int
    layout: RoadLayout
    lighting: str
    fog: float
    sun: tuple[float, float, float]  # unit vector towards the sun (world), z may be < 0 at night
    ego: RoadMotion
    ego_lane: int
    mode: str  # "cruise", or at an intersection: "go", "stop", "wait", "yellow"
    agents: list[Agent]
    statics: list[Prim]  # world-frame boxes (dx, dy = world x, y; dyaw = world yaw)
    lamps: list[tuple[float, float, float]]  # street-lamp heads (world) that light the scene at night
    distant_lights: bool
    duration: float

    def ego_pose(self, t: float) -> tuple[float, float, float]:
        """World (x, y, yaw) of the ego in metres and radians at ``t`` seconds."""
        return self.ego.pose(t)

    def frame(self, t: float, cull: float) -> Frame:
        """The scene at ``t`` seconds, keeping agents and lamps within ``cull`` metres of the ego
        (static prims within a wider margin, as buildings are large).
        """
        ex, ey, eyaw = self.ego.pose(t)
        near = []
        for a in self.agents:
            x, y, yaw = a.pose(t)
            if math.hypot(x - ex, y - ey) < cull:
                near.append((a, (x, y, yaw)))
        statics = [p for p in self.statics if math.hypot(p.dx - ex, p.dy - ey) < cull + 30.0 + max(p.l, p.w)]
        lamps = [lp for lp in self.lamps if math.hypot(lp[0] - ex, lp[1] - ey) < cull]
        return Frame(self, t, (ex, ey, eyaw), near, statics, lamps)


@dataclass
class Frame:
    """A scene at one instant: the ego pose, the agents within the cull radius, and world prims."""

    scene: Scene
    t: float
    ego: tuple[float, float, float]
    agents: list[tuple[Agent, tuple[float, float, float]]]
    statics: list[Prim]
    lamps: list[tuple[float, float, float]]
    prims: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rows: list[tuple] = []
        for a, (x, y, yaw) in self.agents:
            c, s = math.cos(yaw), math.sin(yaw)
            extra = LIGHT_STATE_IDS[a.state(self.t)] if a.kind == "traffic_light" else 0
            for p in a.prims:
                lit = 1 if (p.material == MAT_PAINT and a.kind in ("car", "truck", "bus")) else 0
                rows.append((x + c * p.dx - s * p.dy, y + s * p.dx + c * p.dy, p.cz, p.l, p.w, p.h, yaw + p.dyaw,
                             p.material, p.semantic, a.track_id, extra if p.material == MAT_SIGNAL else lit,
                             *p.colour))
        for i, p in enumerate(self.statics):
            rows.append((p.dx, p.dy, p.cz, p.l, p.w, p.h, p.dyaw, p.material, p.semantic, 0, i, *p.colour))
        t = torch.tensor(rows, dtype=torch.float64) if rows else torch.zeros(0, 14, dtype=torch.float64)
        self.prims = {
            "boxes": t[:, :7].float(), "material": t[:, 7].long(), "semantic": t[:, 8].long(),
            "instance": t[:, 9].long(), "extra": t[:, 10].long(), "colour": t[:, 11:14].float(),
        }


def _pick(rng: random.Random, value, options: list, weights: list[float]):
    # Always draw, so fixing one domain variable leaves every other draw (and the scene) unchanged.
    drawn = rng.choices(options, weights)[0]
    return drawn if value == "random" else value


def generate_scene(cfg: WorldConfig, index: int) -> Scene:
    """Scene ``index`` of the world ``cfg`` (pure function of ``cfg`` and ``index``)."""
    rng = random.Random(f"hydranet-world/{cfg.seed}/scene/{index}")
    duration = cfg.frames_per_scene / cfg.rate_hz
    lighting = _pick(rng, cfg.lighting, ["day", "dusk", "night"], [0.6, 0.2, 0.2])
    foggy, density = rng.random() < 0.35, rng.uniform(0.004, 0.03)
    fog = float(cfg.fog) if cfg.fog != "random" else (density if foggy else 0.0)
    kind = _pick(rng, cfg.layout, list(cfg.layout_weights), list(cfg.layout_weights.values()))
    lanes = rng.randint(*cfg.lanes_per_direction)
    ego_lane = rng.randrange(lanes)
    v = rng.uniform(*cfg.ego_speed)

    curve_start, curvature, cross_u, cross_lanes = math.inf, 0.0, None, rng.randint(1, 2)
    mode, t_brake, decel, queue = "cruise", math.inf, 0.0, 0
    if kind == "curve":
        curve_start = rng.uniform(-20.0, 40.0)
        curvature = rng.choice([-1.0, 1.0]) / rng.uniform(110.0, 350.0)
    elif kind == "intersection":
        hw2 = cross_lanes * LANE_WIDTH
        mode = rng.choices(list(cfg.signal_weights), list(cfg.signal_weights.values()))[0]
        if mode == "go":
            cross_u = rng.uniform(12.0, 60.0) + hw2 + STOP_SETBACK + _EGO_FRONT
        else:
            queue = rng.randint(0, 2) if mode != "yellow" else 0
            decel = rng.uniform(1.2, 3.0)
            if mode == "wait":
                v = 0.0
            t_brake = 0.0 if mode != "yellow" else rng.uniform(0.3, 0.6) * duration
            cruise = v * t_brake if mode == "yellow" else 0.0
            stop_at = cruise + (v * v / (2 * decel) if v > 0 else 0.0)  # ego origin's resting u
            gap = queue * 6.8 + 1.2
            cross_u = stop_at + _EGO_FRONT + gap + STOP_W / 2 + STOP_SETBACK + hw2
        if rng.random() < 0.4:
            curve_start = cross_u + hw2 + rng.uniform(30.0, 60.0)
            curvature = rng.choice([-1.0, 1.0]) / rng.uniform(120.0, 350.0)
    layout = RoadLayout(lanes, curve_start, curvature, cross_u, cross_lanes)
    t_go, accel = math.inf, 0.0
    if cfg.ego_stop_and_go and mode in ("cruise", "go") and v > 0:
        # A separate stream: turning stop-and-go on changes the ego's speed profile and nothing else.
        sg = random.Random(f"hydranet-world/{cfg.seed}/stop_and_go/{index}")
        v = min(v, sg.uniform(4.0, 7.0))  # jam speeds, so a whole stop-and-go cycle fits in a scene
        decel = sg.uniform(2.5, 4.0)
        t_brake = sg.uniform(0.05, 0.15) * duration
        t_go = t_brake + v / decel + sg.uniform(0.2, 0.3) * duration  # stand still for a while
        accel = sg.uniform(2.0, 3.0)
    ego = RoadMotion(layout, False, layout.lane_centre(ego_lane), 1, 0.0, v, t_brake, decel, t_go, accel)

    u_el, az = rng.random(), rng.uniform(-math.pi, math.pi)  # drawn for every lighting (see _pick)
    el = math.radians({"day": 25 + 40 * u_el, "dusk": 2 + 7 * u_el, "night": -20.0}[lighting])
    sun = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))

    agents = populate(rng, cfg, layout, ego, ego_lane, mode, queue, duration)
    statics, lamps = _scenery(rng, cfg, layout, ego, duration)
    if cross_u is not None:
        next_id = max((a.track_id for a in agents), default=0) + 1
        statics += _signals(layout, mode, t_brake, agents, next_id)
    vocabulary = {c for names in cfg.setup.classes.values() for c in names}
    add_extras(cfg.seed, index, vocabulary, layout, ego.s_at(0.0), agents)  # last: other draws stay as they were
    return Scene(index, layout, lighting, fog, sun, ego, ego_lane, mode, agents, statics, lamps,
                 cfg.distant_lights, duration)


_FACADES = [(0.72, 0.66, 0.56), (0.55, 0.55, 0.57), (0.62, 0.36, 0.28), (0.70, 0.72, 0.76), (0.80, 0.76, 0.64),
            (0.45, 0.42, 0.40), (0.58, 0.62, 0.66)]


def _scenery(rng: random.Random, cfg: WorldConfig, layout: RoadLayout, ego: RoadMotion,
             duration: float) -> tuple[list[Prim], list[tuple[float, float, float]]]:
    """Buildings along the roads and street lamps on the sidewalks."""
    prims: list[Prim] = []
    lamps: list[tuple[float, float, float]] = []
    hw = layout.half_width
    u_lo, u_hi = ego.s_at(0.0) - 110.0, ego.s_at(duration) + 130.0
    cross = layout.cross_u

    def clear_of_cross(u: float, half: float) -> bool:
        return cross is None or abs(u - cross) > layout.cross_half_width + SIDEWALK + half + 2.0

    urban = rng.random() < cfg.building_density
    if urban:
        for side in (-1.0, 1.0):
            u = u_lo + rng.uniform(0.0, 10.0)
            while u < u_hi:
                wb, depth, height = rng.uniform(8, 22), rng.uniform(8, 16), rng.choice([rng.uniform(5, 10),
                                                                                        rng.uniform(8, 28)])
                setback = rng.uniform(0.5, 6.0)
                uc = u + wb / 2
                if clear_of_cross(uc, wb / 2):
                    x, y, th = (float(v) for v in layout.pose(uc, side * (hw + SIDEWALK + setback + depth / 2)))
                    prims.append(Prim(x, y, height / 2, wb, depth, height, MAT_BUILDING, SEM["building"],
                                      rng.choice(_FACADES), th))
                u += wb + rng.uniform(0.5, 8.0)
        if cross is not None:
            hw2 = layout.cross_half_width
            for side in (-1.0, 1.0):
                for sgn in (-1.0, 1.0):
                    y = sgn * (hw + SIDEWALK + 24.0)
                    while abs(y) < 100.0:
                        wb, depth, height = rng.uniform(8, 20), rng.uniform(8, 14), rng.uniform(6, 24)
                        x = cross + side * (hw2 + SIDEWALK + rng.uniform(0.5, 5.0) + depth / 2)
                        prims.append(Prim(x, y + sgn * wb / 2, height / 2, depth, wb, height, MAT_BUILDING,
                                          SEM["building"], rng.choice(_FACADES), 0.0))
                        y += sgn * (wb + rng.uniform(0.5, 6.0))
    if cfg.street_lamps and (urban or rng.random() < 0.5):
        spacing = rng.uniform(25.0, 40.0)
        for side in (-1.0, 1.0):
            u = u_lo + (0.0 if side > 0 else spacing / 2)
            while u < u_hi:
                if clear_of_cross(u, 1.0):
                    d_pole = side * (hw + CURB + 0.5)
                    x, y, th = (float(v) for v in layout.pose(u, d_pole))
                    prims.append(Prim(x, y, 3.75, 0.16, 0.16, 7.5, MAT_METAL, SEM["pole"], (0.35, 0.36, 0.38), th))
                    xa, ya, _ = (float(v) for v in layout.pose(u, d_pole - side * 0.9))
                    prims.append(Prim(xa, ya, 7.45, 0.1, 1.8, 0.1, MAT_METAL, SEM["pole"], (0.35, 0.36, 0.38), th))
                    xl, yl, _ = (float(v) for v in layout.pose(u, d_pole - side * 1.9))
                    prims.append(Prim(xl, yl, 7.35, 0.7, 0.35, 0.16, MAT_LAMP, SEM["pole"], (0.5, 0.5, 0.5), th))
                    lamps.append((xl, yl, 7.2))
                u += spacing
    return prims, lamps


def _signals(layout: RoadLayout, mode: str, t_brake: float, agents: list[Agent], next_id: int) -> list[Prim]:
    """A mast-arm signal over the ego's approach: one housing per forward lane (agents), pole and arm
    (static prims). Returns the static prims and appends the housings to ``agents``."""
    assert layout.cross_u is not None
    hw = layout.half_width
    u = layout.cross_u - layout.cross_half_width - 1.0
    if mode == "go":
        schedule = [(-1e9, "green")]
    elif mode == "yellow":
        schedule = [(-1e9, "green"), (t_brake, "yellow"), (t_brake + 3.0, "red")]
    else:
        schedule = [(-1e9, "red")]
    for lane in range(layout.lanes):
        x, y, th = (float(v) for v in layout.pose(u, layout.lane_centre(lane)))
        agents.append(Agent("traffic_light", next_id + lane, (0.3, 0.36, 1.0), 5.3, signal_prims(5.3),
                            StaticMotion(x, y, th), lane=lane, schedule=schedule))
    grey = (0.32, 0.33, 0.35)
    d_pole = -(hw + CURB + 0.6)
    xp, yp, th = (float(v) for v in layout.pose(u, d_pole))
    xa, ya, _ = (float(v) for v in layout.pose(u, d_pole / 2))
    return [Prim(xp, yp, 3.05, 0.25, 0.25, 6.1, MAT_METAL, SEM["pole"], grey, th),
            Prim(xa, ya, 5.95, 0.16, abs(d_pole) + 0.2, 0.16, MAT_METAL, SEM["pole"], grey, th)]
