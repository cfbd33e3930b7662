"""Populate a scene with traffic, pedestrians and cones whose analytic motions never collide.

Rules that keep motion collision-free without simulating it:
- vehicles in one lane move with the same profile or are spaced so that the follower never gains;
- at a red light, queued vehicles are stationary and approaching ones brake to stop a fixed gap
  behind them; the ego's followers copy the ego's profile shifted back;
- pedestrians walk on sidewalks (never into the crossing road) or on the crosswalk of the road that
  currently has a red light.
"""

from __future__ import annotations

import math
import random

from hydranet.world.agents import (
    Agent,
    LinearMotion,
    RoadMotion,
    StaticMotion,
    car_prims,
    cone_prims,
    pedestrian_prims,
    truck_prims,
)
from hydranet.world.config import WorldConfig
from hydranet.world.roads import CURB, LANE_WIDTH, STOP_SETBACK, STOP_W, RoadLayout

_PAINTS = [(0.92, 0.92, 0.92), (0.70, 0.71, 0.73), (0.40, 0.41, 0.43), (0.08, 0.08, 0.09), (0.10, 0.16, 0.38),
           (0.62, 0.07, 0.06), (0.15, 0.35, 0.65), (0.20, 0.33, 0.22), (0.75, 0.68, 0.52), (0.85, 0.62, 0.10)]
_CLOTHES = [(0.15, 0.2, 0.45), (0.5, 0.1, 0.1), (0.1, 0.1, 0.1), (0.85, 0.85, 0.8), (0.25, 0.45, 0.25),
            (0.6, 0.5, 0.35), (0.9, 0.7, 0.1), (0.35, 0.35, 0.38)]
_SKIN = [(0.87, 0.70, 0.58), (0.65, 0.46, 0.34), (0.42, 0.29, 0.20), (0.95, 0.80, 0.68)]
_QUEUE_PITCH = 6.8  # queued car spacing (car length <= 4.8 m + 2 m)
EGO_REAR, EGO_FRONT_OFFSET = 0.9, 3.8  # ego extent behind / ahead of its origin (rear axle)


class _Ids:
    def __init__(self) -> None:
        self.next = 1

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def _vehicle_dims(rng: random.Random, truck_fraction: float, short: bool = False) -> tuple[str, tuple]:
    if not short and rng.random() < truck_fraction:
        return "truck", (rng.uniform(6.5, 9.5), rng.uniform(2.35, 2.55), rng.uniform(3.0, 3.8))
    h = rng.uniform(1.42, 1.65) if rng.random() < 0.7 else rng.uniform(1.65, 1.8)
    return "car", (rng.uniform(4.1, 4.8), rng.uniform(1.75, 1.95), h)


def _vehicle(rng: random.Random, kind: str, dims: tuple, tid: int, motion) -> Agent:
    l, w, h = dims
    paint = rng.choice(_PAINTS)
    if kind == "truck":
        cargo = rng.choice([(0.9, 0.9, 0.88), (0.75, 0.76, 0.78), paint, (0.55, 0.2, 0.1)])
        prims = truck_prims(l, w, h, paint, cargo)
    else:
        prims = car_prims(l, w, h, paint)
    return Agent(kind, tid, (l, w, h), h / 2, prims, motion)


def populate(rng: random.Random, cfg: WorldConfig, layout: RoadLayout, ego: RoadMotion, ego_lane: int, mode: str,
             queue: int, duration: float) -> list[Agent]:
    """Every agent of a scene (vehicles per lane and direction, crossing traffic, pedestrians, cones),
    with analytic motions that never collide over ``duration`` seconds (rules in the module docstring).

    ``mode`` is the ego's situation (``"cruise"``; at an intersection ``"go"``, ``"stop"``, ``"wait"``,
    ``"yellow"``) and ``queue`` the vehicles already stopped ahead of the ego at a red light.
    Deterministic for a given ``rng`` state.
    """
    traffic = _Traffic(rng, cfg, layout, ego, mode, duration)
    for lane in range(layout.lanes):
        traffic.main_road_lane(lane, lane == ego_lane, queue)
    if layout.cross_u is not None:
        for lane in range(layout.cross_lanes):
            traffic.cross_road_lane(lane)
    _pedestrians(rng, cfg, layout, traffic.agents, traffic.ids, traffic.lo, traffic.hi, duration, mode)
    if rng.random() < cfg.cone_probability:
        traffic.cones()
    return traffic.agents


class _Traffic:
    """The vehicles (and cones) of one scene, added lane by lane; every draw comes from the one ``rng``
    in a fixed order, so a scene is the same for the same seed."""

    def __init__(self, rng: random.Random, cfg: WorldConfig, layout: RoadLayout, ego: RoadMotion, mode: str,
                 duration: float) -> None:
        self.rng, self.cfg, self.layout, self.ego, self.mode, self.duration = rng, cfg, layout, ego, mode, duration
        self.ids = _Ids()
        self.agents: list[Agent] = []
        self.u0 = ego.s_at(0.0)
        self.lo, self.hi = self.u0 - 75.0, ego.s_at(duration) + 75.0
        self.red = mode in ("stop", "wait", "yellow")  # the ego's approach gets (or has) a red light
        self.t_brake = ego.t_brake if mode == "yellow" else 0.0
        self.mean_gap = 40.0 / cfg.traffic_density if cfg.traffic_density > 0 else math.inf
        self.v_flow = max(ego.v, rng.uniform(*cfg.ego_speed), 3.0)
        self.p_car = min(1.0, 0.45 * cfg.traffic_density)

    def _add(self, kind: str, dims: tuple[float, float, float], motion: RoadMotion) -> None:
        self.agents.append(_vehicle(self.rng, kind, dims, self.ids(), motion))

    def flow(self, on_cross: bool, d: float, direction: int, a: float, b: float, v: float,
             keep=lambda u, half: True) -> None:
        """Constant-speed traffic over [a, b] at t = 0, spaced so nobody catches up (same v)."""
        if not math.isfinite(self.mean_gap):
            return
        u = a + self.rng.uniform(0.0, self.mean_gap)
        while u < b:
            kind, dims = _vehicle_dims(self.rng, self.cfg.truck_fraction)
            uc = u + dims[0] / 2
            if keep(uc, dims[0] / 2):
                self._add(kind, dims, RoadMotion(self.layout, on_cross, d, direction, uc, v))
            u += dims[0] + max(7.0, self.rng.expovariate(1.0 / self.mean_gap))

    def approach(self, on_cross: bool, d: float, direction: int, line_front: float, n_queue: int, n_brake: int,
                 start_gap: float = 1.0) -> None:
        """Stationary queue behind a stop line plus vehicles braking to join it."""
        front = line_front - direction * start_gap  # front bumper of the first car
        # One speed profile per lane: the braking vehicles keep constant gaps and stop QUEUE_PITCH apart.
        v, a = self.rng.uniform(0.7, 1.0) * self.v_flow, self.rng.uniform(1.2, 3.0)
        for k in range(n_queue + n_brake):
            kind, dims = _vehicle_dims(self.rng, self.cfg.truck_fraction, short=True)
            centre = front - direction * dims[0] / 2
            if k < n_queue:
                motion = RoadMotion(self.layout, on_cross, d, direction, centre, 0.0)
            else:
                travel = v * self.t_brake + v * v / (2 * a)
                motion = RoadMotion(self.layout, on_cross, d, direction, centre - direction * travel, v,
                                    self.t_brake, a)
            self._add(kind, dims, motion)
            front -= direction * _QUEUE_PITCH

    def busy(self, p: float) -> int:
        """How many vehicles (0..3) a lane's queue or braking group gets, each present with probability ``p``."""
        return sum(self.rng.random() < p for _ in range(3)) if math.isfinite(self.mean_gap) else 0

    def _follow_ego(self, d: float, u: float, short: bool, count: int | None) -> None:
        """Vehicles behind the ego in its lane on the ego's own speed profile, from ``u`` backwards:
        ``count`` of them QUEUE_PITCH apart, or (None) spaced by the traffic density down to ``lo``."""
        ego = self.ego
        k = 0
        while k < count if count is not None else math.isfinite(self.mean_gap) and u > self.lo - ego.v * self.duration:
            kind, dims = _vehicle_dims(self.rng, self.cfg.truck_fraction, short=short)
            m = RoadMotion(self.layout, False, d, 1, u - dims[0] / 2, ego.v, ego.t_brake, ego.decel, ego.t_go,
                           ego.accel)
            self._add(kind, dims, m)
            u -= _QUEUE_PITCH if count is not None else dims[0] + max(7.0, self.rng.expovariate(1.0 / self.mean_gap))
            k += 1

    def main_road_lane(self, lane: int, is_ego_lane: bool, queue: int) -> None:
        """Both directions of main-road lane ``lane``: free flow, or queues at the ego's red light."""
        layout, ego, rng = self.layout, self.ego, self.rng
        cross, hw2, v_flow = layout.cross_u, layout.cross_half_width, self.v_flow
        d_fwd, d_opp = layout.lane_centre(lane), (lane + 0.5) * LANE_WIDTH
        v_lane = ego.v * rng.uniform(1.0, 1.12) if is_ego_lane else v_flow * rng.uniform(0.85, 1.1)
        if cross is None or not self.red:
            if is_ego_lane:
                # Ahead: at least as fast as the ego. Behind: the ego's own profile, shifted back.
                self.flow(False, d_fwd, 1, self.u0 + EGO_FRONT_OFFSET + 8.0, self.hi + v_lane * self.duration, v_lane)
                u = self.u0 - EGO_REAR - rng.uniform(8.0, 8.0 + self.mean_gap if math.isfinite(self.mean_gap) else 9.0)
                self._follow_ego(d_fwd, u, short=False, count=None)
            else:
                self.flow(False, d_fwd, 1, self.lo - v_lane * self.duration, self.hi, v_lane)
            self.flow(False, d_opp, -1, self.lo, self.hi + v_flow * self.duration, v_flow)
            return
        stop_front = layout.stop_u - STOP_W / 2
        opp_front = cross + hw2 + STOP_SETBACK + STOP_W / 2
        beyond = cross + hw2 + 6.0
        self.flow(False, d_fwd, 1, beyond, self.hi + v_lane * self.duration, v_lane)
        self.flow(False, d_opp, -1, self.lo, cross - hw2 - 6.0, v_flow, keep=lambda u, h: u < cross - hw2 - 6.0 - h)
        if is_ego_lane:
            self.approach(False, d_fwd, 1, stop_front, queue, 0, start_gap=1.2)
            u = ego.s0 - EGO_REAR - rng.uniform(2.0, 6.0)
            self._follow_ego(d_fwd, u, short=True, count=self.busy(self.p_car))
        else:
            self.approach(False, d_fwd, 1, stop_front, self.busy(self.p_car) if self.mode != "yellow" else 0,
                          self.busy(self.p_car))
        self.approach(False, d_opp, -1, opp_front, self.busy(self.p_car) if self.mode != "yellow" else 0,
                      self.busy(self.p_car))

    def cross_road_lane(self, lane: int) -> None:
        """Both directions of cross-road lane ``lane``: free flow while the ego's light is red, else queues."""
        off = (lane + 0.5) * LANE_WIDTH
        for direction in (1, -1):
            d = -off * direction  # right-hand traffic: x = cross_u + off heading +y
            line_front = -direction * (self.layout.half_width + STOP_SETBACK + STOP_W / 2)
            if self.red and self.mode != "yellow":
                start = -90.0 if direction > 0 else -90.0 - self.v_flow * self.duration
                end = 90.0 + self.v_flow * self.duration if direction > 0 else 90.0
                self.flow(True, d, direction, start, end, self.v_flow * 0.9)
            else:
                self.approach(True, d, direction, line_front, self.busy(self.p_car), self.busy(self.p_car))

    def cones(self) -> None:
        """A row of 4-8 cones along one road edge ahead of the ego, kept out of the intersection."""
        layout, rng = self.layout, self.rng
        cross, hw, hw2 = layout.cross_u, layout.half_width, layout.cross_half_width
        side = rng.choice([-1.0, 1.0])
        u = self.u0 + rng.uniform(10.0, 50.0)
        for _ in range(rng.randint(4, 9)):
            if cross is None or abs(u - cross) > hw2 + STOP_SETBACK + 3.0:
                x, y, th = (float(v) for v in layout.pose(u, side * (hw - 0.2)))
                self.agents.append(Agent("cone", self.ids(), (0.4, 0.4, 0.75), 0.375, cone_prims(),
                                         StaticMotion(x, y, th)))
            u += rng.uniform(2.5, 5.0)


def _pedestrian(rng: random.Random, tid: int, motion) -> Agent:
    h = rng.uniform(1.55, 1.92)
    prims = pedestrian_prims(h, rng.choice(_CLOTHES), rng.choice(_CLOTHES), rng.choice(_SKIN),
                             rng.uniform(0, 2 * math.pi))
    return Agent("pedestrian", tid, (0.5, 0.6, h), h / 2, prims, motion)


class _Walkways:
    """Sidewalk walkers keep to one of a few lateral slots; a walker is added only if, over the
    whole scene, it stays clear of everyone in its slot (constant speeds: check the two ends)."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.slots: dict[tuple, list[tuple[float, float]]] = {}

    def free(self, key: tuple, u0: float, v: float) -> bool:
        for u1, w in self.slots.get(key, []):
            a, b = u0 - u1, (u0 + v * self.duration) - (u1 + w * self.duration)
            if a * b <= 0 or min(abs(a), abs(b)) < 1.0:
                return False
        self.slots.setdefault(key, []).append((u0, v))
        return True


def _pedestrians(rng: random.Random, cfg: WorldConfig, layout: RoadLayout, agents: list[Agent], ids: _Ids,
                 lo: float, hi: float, duration: float, mode: str) -> None:
    hw, cross = layout.half_width, layout.cross_u
    hw2 = layout.cross_half_width
    ways = _Walkways(duration)
    slot_w, n_slots = 0.7, 3  # 0.6 m wide walkers; the first slot keeps clear of the lamp poles
    for side in (-1.0, 1.0):
        n = round(cfg.pedestrian_density * (hi - lo) / 30.0 * rng.uniform(0.4, 1.4))
        for _ in range(n):
            u, v = rng.uniform(lo, hi), (0.0 if rng.random() < 0.15 else rng.uniform(0.9, 1.7))
            direction = rng.choice([-1, 1])
            slot = rng.randrange(n_slots)
            end = u + direction * v * duration
            if cross is not None and min(abs(u - cross), abs(end - cross)) < hw2 + 3.5 + v * duration:
                continue
            if not ways.free(("main", side, slot), u, direction * v):
                continue
            d = side * (hw + CURB + 0.9 + slot * slot_w)
            agents.append(_pedestrian(rng, ids(), RoadMotion(layout, False, d, direction, u, v)))
    if cross is None:
        return
    for side in (-1.0, 1.0):
        for _ in range(round(cfg.pedestrian_density * rng.uniform(1, 4))):
            sgn = rng.choice([-1.0, 1.0])
            v, direction = rng.uniform(0.9, 1.6), rng.choice([-1, 1])
            u = sgn * rng.uniform(hw + 3.5 + v * duration, 60.0)
            slot = rng.randrange(n_slots)
            if not ways.free(("cross", side, slot), u, direction * v):
                continue
            d = side * (hw2 + CURB + 0.9 + slot * slot_w)
            agents.append(_pedestrian(rng, ids(), RoadMotion(layout, True, d, direction, u, v)))
    # Walkers on the crosswalk of whichever road has the red light, one per crosswalk slot.
    for slot in range(3):
        if rng.random() >= 0.5 * cfg.pedestrian_density:
            continue
        v = rng.uniform(1.0, 1.5) * rng.choice([-1.0, 1.0])
        off = (slot - 1) * 0.9  # across the 2.8 m crosswalk band
        if mode in ("stop", "wait"):
            motion = LinearMotion(cross - hw2 - 2.0 + off, rng.uniform(-hw - 1.5, hw + 1.5) - v * duration / 2, 0.0, v)
        else:
            y = rng.choice([-1.0, 1.0]) * (hw + 2.0 + off)
            motion = LinearMotion(cross + rng.uniform(-hw2 - 1.5, hw2 + 1.5) - v * duration / 2, y, v, 0.0)
        agents.append(_pedestrian(rng, ids(), motion))
