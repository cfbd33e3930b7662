"""The object classes the world renders only when the setup's vocabulary names them: buses, bicycles,
motorcycles and barriers (nuScenes' ``bus``, ``bicycle``, ``motorcycle``, ``barrier``).

They come from a random stream of their own (``hydranet-world/<seed>/extras/<scene>``) and are added after
every other draw of the scene, so a world whose vocabulary lacks them renders byte for byte what it rendered
before they existed. Collision-free by construction, as the rest of the traffic:

- a truck becomes a bus of the same footprint (half of them), so the lane's spacing still holds;
- a car becomes a motorcycle (10 %) or a bicycle (8 %) with its rider on the car's own motion: a smaller
  object in the car's slot;
- a scene gets a row of 3-6 concrete barriers (half of the scenes) just outside one road edge ahead of the
  ego, where neither vehicles (inside the road) nor pedestrians (beyond the curb) move, kept out of the
  crossing road.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from hydranet.world.agents import Agent, RoadMotion, StaticMotion, barrier_prims, bus_prims, two_wheeler_prims
from hydranet.world.roads import STOP_SETBACK, RoadLayout

EXTRA_KINDS: tuple[str, ...] = ("bus", "bicycle", "motorcycle", "barrier")
_BUS_PAINTS = [(0.85, 0.75, 0.1), (0.1, 0.35, 0.7), (0.8, 0.1, 0.1), (0.9, 0.9, 0.9), (0.15, 0.5, 0.3)]
_SHIRTS = [(0.15, 0.2, 0.45), (0.5, 0.1, 0.1), (0.1, 0.1, 0.1), (0.9, 0.7, 0.1), (0.25, 0.45, 0.25)]
# (l, w, h) of a two-wheeler with its rider, metres (nuScenes' mean sizes).
_TWO_WHEELER_SIZE = {"bicycle": (1.75, 0.6, 1.7), "motorcycle": (2.1, 0.8, 1.5)}
_BARRIER_LENGTH = 2.0


def add_extras(seed: int, index: int, vocabulary: Collection[str], layout: RoadLayout, u0: float,
               agents: list[Agent]) -> None:
    """Turn some trucks into buses and cars into two-wheelers, and add a barrier row, for the classes of
    ``EXTRA_KINDS`` in ``vocabulary`` (world seed ``seed``, scene ``index``; ``u0``: the ego's road coordinate
    at t = 0). Edits ``agents`` in place; nothing is drawn when the vocabulary names none of them."""
    wanted = [k for k in EXTRA_KINDS if k in vocabulary]
    if not wanted:
        return
    rng = random.Random(f"hydranet-world/{seed}/extras/{index}")
    for i, a in enumerate(agents):
        if a.kind == "truck" and "bus" in wanted and rng.random() < 0.5:
            l, w, _ = a.size
            h = 3.2
            agents[i] = Agent("bus", a.track_id, (l, w, h), h / 2, bus_prims(l, w, h, rng.choice(_BUS_PAINTS)),
                              a.motion)
        elif a.kind == "car" and isinstance(a.motion, RoadMotion):
            u = rng.random()
            kind = "motorcycle" if u < 0.10 else "bicycle" if u < 0.18 else None
            if kind in wanted:
                l, w, h = _TWO_WHEELER_SIZE[kind]
                prims = two_wheeler_prims(kind, l, h, rng.choice(_BUS_PAINTS), rng.choice(_SHIRTS))
                agents[i] = Agent(kind, a.track_id, (l, w, h), h / 2, prims, a.motion)
    if "barrier" in wanted and rng.random() < 0.5:
        _barrier_row(rng, layout, u0, agents)


def _barrier_row(rng: random.Random, layout: RoadLayout, u0: float, agents: list[Agent]) -> None:
    """3-6 barriers end to end just outside one road edge, 8-40 m ahead of the ego, clear of the crossing."""
    side = rng.choice([-1.0, 1.0])
    u = u0 + rng.uniform(8.0, 40.0)
    next_id = max((a.track_id for a in agents), default=0) + 1
    for _ in range(rng.randint(3, 6)):
        clear = layout.cross_u is None or abs(u - layout.cross_u) > layout.cross_half_width + STOP_SETBACK + 3.0
        if clear:
            x, y, th = (float(v) for v in layout.pose(u, side * (layout.half_width + 0.35)))
            agents.append(Agent("barrier", next_id, (_BARRIER_LENGTH, 0.6, 1.0), 0.5, barrier_prims(_BARRIER_LENGTH),
                                StaticMotion(x, y, th)))
            next_id += 1
        u += _BARRIER_LENGTH + rng.uniform(0.1, 0.4)
