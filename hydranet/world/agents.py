"""Agents (cars, trucks, pedestrians, cones, traffic lights; buses, bicycles, motorcycles and barriers when a
setup's vocabulary names them), their analytic motion and their shape as a few oriented boxes ("prims").

Motion is a closed-form function of time — cruise at ``v`` then brake at constant ``decel`` — so any
frame of a sequence is computable alone (random access) and velocities are exact derivatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hydranet.data import SEMANTIC_CLASSES
from hydranet.world.roads import RoadLayout

SEM = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}

# Materials: how the renderer shades a prim's surface.
MAT_PAINT, MAT_CABIN, MAT_DARK, MAT_BUILDING, MAT_METAL, MAT_LAMP, MAT_SIGNAL, MAT_FLAT, MAT_CONE = range(9)
LIGHT_STATE_IDS = {"red": 0, "yellow": 1, "green": 2}


@dataclass(frozen=True)
class Prim:
    """An upright box in its owner's frame: centre (dx, dy, cz), size (l, w, h), yaw offset."""

    dx: float
    dy: float
    cz: float
    l: float
    w: float
    h: float
    material: int
    semantic: int
    colour: tuple[float, float, float]
    dyaw: float = 0.0


@dataclass(frozen=True)
class RoadMotion:
    """Follow road coordinate ``d`` on the main or crossing road; ``direction`` +1 along ``u``."""

    road: RoadLayout
    on_cross: bool
    d: float
    direction: int
    s0: float
    v: float
    t_brake: float = math.inf
    decel: float = 0.0
    # Stop-and-go: once stopped, drive off again at ``t_go`` with ``accel`` until back at ``v``.
    t_go: float = math.inf
    accel: float = 0.0

    def s_at(self, t: float) -> float:
        """Signed road coordinate ``u`` (m) at time ``t`` (s): cruise at ``v``, brake at ``decel`` from
        ``t_brake`` to a stop, then (stop-and-go) accelerate at ``accel`` from ``t_go`` back to ``v``.
        """
        if t <= self.t_brake or self.decel <= 0.0:
            return self.s0 + self.direction * self.v * t
        t_stop = self.t_brake + self.v / self.decel
        dt = min(t - self.t_brake, self.v / self.decel)
        s = self.v * self.t_brake + self.v * dt - 0.5 * self.decel * dt * dt
        if t > max(self.t_go, t_stop) and self.accel > 0.0:
            ta = t - max(self.t_go, t_stop)
            t_full = self.v / self.accel
            s += 0.5 * self.accel * min(ta, t_full) ** 2 + self.v * max(0.0, ta - t_full)
        return self.s0 + self.direction * s

    def pose(self, t: float) -> tuple[float, float, float]:
        """World (x, y, heading) in metres and radians at ``t`` seconds, facing the travel direction."""
        s = self.s_at(t)
        if self.on_cross:
            assert self.road.cross_u is not None
            heading = math.pi / 2 if self.direction > 0 else -math.pi / 2
            return self.road.cross_u - self.d, s, heading
        x, y, th = (float(v) for v in self.road.pose(s, self.d))
        return x, y, th + (0.0 if self.direction > 0 else math.pi)


@dataclass(frozen=True)
class LinearMotion:
    """Straight line at constant velocity (pedestrians on a crosswalk)."""

    x0: float
    y0: float
    vx: float
    vy: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """World (x, y, heading) at ``t`` seconds; heading is the velocity's direction (radians)."""
        return self.x0 + self.vx * t, self.y0 + self.vy * t, math.atan2(self.vy, self.vx)


@dataclass(frozen=True)
class StaticMotion:
    """A fixed world pose (x, y in metres, yaw in radians): parked cars, cones, traffic lights."""
    x: float
    y: float
    yaw: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """The fixed world (x, y, yaw), whatever ``t``."""
        return self.x, self.y, self.yaw


@dataclass
class Agent:
    """One object of the world: its labelled 3D box (``size`` = l, w, h and centre height ``z``, metres),
    its shape as ``prims``, its analytic ``motion`` and a ``track_id`` stable over the sequence.
    Traffic lights also carry the forward ``lane`` they govern and a light-state ``schedule``.
    """
    kind: str  # one of hydranet.world.labels.WORLD_KINDS
    track_id: int
    size: tuple[float, float, float]  # l, w, h of the labelled 3D box
    z: float  # box centre height
    prims: list[Prim]
    motion: RoadMotion | LinearMotion | StaticMotion
    # traffic lights only: forward lane governed and the schedule [(t_start, state), ...]
    lane: int = 0
    schedule: list[tuple[float, str]] = field(default_factory=list)

    def pose(self, t: float) -> tuple[float, float, float]:
        """World (x, y, yaw) in metres and radians at ``t`` seconds (delegates to ``motion``)."""
        return self.motion.pose(t)

    def velocity(self, t: float, eps: float = 0.025) -> tuple[float, float]:
        """World-frame (vx, vy) by a central difference of the analytic motion (exact for cruise)."""
        (x0, y0, _), (x1, y1, _) = self.pose(t - eps), self.pose(t + eps)
        return (x1 - x0) / (2 * eps), (y1 - y0) / (2 * eps)

    def state(self, t: float) -> str:
        """Traffic-light state (``"red"``, ``"yellow"`` or ``"green"``) at ``t`` seconds: the last schedule
        entry started by then, else the first one (``"red"`` with no schedule).
        """
        current = self.schedule[0][1] if self.schedule else "red"
        for start, st in self.schedule:
            if t >= start:
                current = st
        return current


# ---- shapes ------------------------------------------------------------------------------------


def car_prims(l: float, w: float, h: float, colour: tuple[float, float, float]) -> list[Prim]:
    """A car as four prims (body, cabin, two wheel axles) for a box ``l`` × ``w`` × ``h`` metres."""
    body_h = 0.55 * h
    wheel = 0.66
    car, dark = SEM["car"], (0.06, 0.06, 0.07)
    return [
        Prim(0.0, 0.0, 0.28 + body_h / 2 - 0.05, l, w, body_h - 0.1, MAT_PAINT, car, colour),
        Prim(-0.08 * l, 0.0, 0.23 + body_h + (h - 0.23 - body_h) / 2, 0.52 * l, 0.9 * w, h - 0.23 - body_h,
             MAT_CABIN, car, colour),
        Prim(0.33 * l, 0.0, wheel / 2, wheel, w - 0.08, wheel, MAT_DARK, car, dark),
        Prim(-0.30 * l, 0.0, wheel / 2, wheel, w - 0.08, wheel, MAT_DARK, car, dark),
    ]


def truck_prims(l: float, w: float, h: float, colour: tuple[float, float, float],
                cargo: tuple[float, float, float]) -> list[Prim]:
    """A truck as five prims (cab, cab window, cargo box in ``cargo`` colour, two wheel sets), metres."""
    cab_l, wheel = 2.3, 0.95
    truck, dark = SEM["truck"], (0.06, 0.06, 0.07)
    cab_h = 0.78 * h
    return [
        Prim(l / 2 - cab_l / 2, 0.0, 0.55 + (cab_h - 0.55) / 2, cab_l, w, cab_h - 0.55, MAT_PAINT, truck, colour),
        Prim(l / 2 - cab_l * 0.45, 0.0, cab_h - 0.55, cab_l * 0.7, w * 0.96, 1.0, MAT_CABIN, truck, colour),
        Prim(-cab_l / 2 - 0.1, 0.0, 0.95 + (h - 0.95) / 2, l - cab_l - 0.2, w, h - 0.95, MAT_PAINT, truck, cargo),
        Prim(l / 2 - 1.2, 0.0, wheel / 2, wheel, w - 0.1, wheel, MAT_DARK, truck, dark),
        Prim(-l / 2 + 1.6, 0.0, wheel / 2, 2.2, w - 0.1, wheel, MAT_DARK, truck, dark),
    ]


def pedestrian_prims(h: float, shirt: tuple[float, float, float], pants: tuple[float, float, float],
                     skin: tuple[float, float, float], phase: float) -> list[Prim]:
    """A pedestrian of height ``h`` metres as legs, torso and head; ``phase`` (radians) sets the stride."""
    ped = SEM["pedestrian"]
    leg_h, torso_h, head = 0.47 * h, 0.35 * h, 0.18 * h
    stride = 0.12 * math.sin(phase)  # legs apart mid-stride: a cheap walking silhouette
    return [
        Prim(stride, 0.1, leg_h / 2, 0.16, 0.15, leg_h, MAT_FLAT, ped, pants),
        Prim(-stride, -0.1, leg_h / 2, 0.16, 0.15, leg_h, MAT_FLAT, ped, pants),
        Prim(0.0, 0.0, leg_h + torso_h / 2, 0.26, 0.46, torso_h, MAT_FLAT, ped, shirt),
        Prim(0.0, 0.0, leg_h + torso_h + head / 2, 0.2, 0.18, head, MAT_FLAT, ped, skin),
    ]


def cone_prims() -> list[Prim]:
    """A traffic cone as a base plate and two stacked orange segments (0.75 m tall)."""
    cone, orange = SEM["cone"], (0.95, 0.38, 0.05)
    return [
        Prim(0.0, 0.0, 0.025, 0.4, 0.4, 0.05, MAT_FLAT, cone, (0.1, 0.1, 0.1)),
        Prim(0.0, 0.0, 0.05 + 0.17, 0.26, 0.26, 0.34, MAT_CONE, cone, orange),
        Prim(0.0, 0.0, 0.39 + 0.18, 0.14, 0.14, 0.36, MAT_CONE, cone, orange),
    ]


def bus_prims(l: float, w: float, h: float, colour: tuple[float, float, float]) -> list[Prim]:
    """A bus as a long body, a window band along its whole length and two wheel axles, metres."""
    bus, dark, wheel = SEM["bus"], (0.06, 0.06, 0.07), 0.95
    return [
        Prim(0.0, 0.0, 0.35 + (0.62 * h - 0.35) / 2, l, w, 0.62 * h - 0.35, MAT_PAINT, bus, colour),
        Prim(0.0, 0.0, 0.62 * h + 0.3 * h / 2, l - 0.3, w * 0.97, 0.3 * h, MAT_CABIN, bus, colour),
        Prim(0.0, 0.0, 0.92 * h + 0.08 * h / 2, l, w, 0.08 * h, MAT_PAINT, bus, colour),
        Prim(l / 2 - 2.2, 0.0, wheel / 2, wheel, w - 0.1, wheel, MAT_DARK, bus, dark),
        Prim(-l / 2 + 2.6, 0.0, wheel / 2, wheel, w - 0.1, wheel, MAT_DARK, bus, dark),
    ]


def two_wheeler_prims(kind: str, l: float, h: float, frame: tuple[float, float, float],
                      shirt: tuple[float, float, float]) -> list[Prim]:
    """A bicycle or motorcycle (``kind``) with its rider, ``l`` long and ``h`` tall (rider included): two thin
    wheels, the frame between them and the rider's body; metres."""
    sem, dark = SEM[kind], (0.05, 0.05, 0.06)
    wheel = 0.66 if kind == "bicycle" else 0.6
    body = 0.2 if kind == "bicycle" else 0.45  # a motorcycle's engine and tank are bulky
    return [
        Prim(l / 2 - wheel / 2, 0.0, wheel / 2, wheel, 0.08, wheel, MAT_DARK, sem, dark),
        Prim(-l / 2 + wheel / 2, 0.0, wheel / 2, wheel, 0.08, wheel, MAT_DARK, sem, dark),
        Prim(0.0, 0.0, wheel * 0.75, l - wheel, body, body if kind == "motorcycle" else 0.12, MAT_PAINT, sem, frame),
        Prim(-0.1 * l, 0.0, wheel + (h - wheel) / 2, 0.35, 0.42, h - wheel, MAT_FLAT, sem, shirt),
    ]


def barrier_prims(l: float) -> list[Prim]:
    """A concrete road barrier ``l`` metres long: a 0.6 m wide base and a 0.3 m wide top, 1 m tall."""
    barrier, concrete, stripe = SEM["barrier"], (0.72, 0.72, 0.70), (0.85, 0.15, 0.1)
    return [
        Prim(0.0, 0.0, 0.2, l, 0.6, 0.4, MAT_FLAT, barrier, concrete),
        Prim(0.0, 0.0, 0.4 + 0.25, l, 0.3, 0.5, MAT_FLAT, barrier, concrete),
        Prim(0.0, 0.0, 0.95, l, 0.3, 0.1, MAT_FLAT, barrier, stripe),
    ]


def signal_prims(z: float) -> list[Prim]:
    """A three-lamp housing centred at height ``z``, lamps facing -x of its frame (oncoming ego)."""
    return [Prim(0.0, 0.0, z, 0.3, 0.36, 1.0, MAT_SIGNAL, SEM["traffic_light"], (0.08, 0.08, 0.08))]
