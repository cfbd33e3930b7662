"""Ground truth for one rendered frame, in exactly the formats of ``hydranet.data.sample``.

Camera labels come from the renderer's per-pixel buffers (so they agree with the pixels by
construction); ego-frame labels (3D boxes, lane lines, BEV map, future path) come from the analytic
scene, transformed into the current ego frame. Object classes are the setup's vocabulary
(``in_vocabulary``): an agent's kind by name (the world's ``cone`` is nuScenes' ``traffic_cone``); kinds
the vocabulary lacks are rendered but not labelled as objects.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hydranet.data import BEV_CLASSES, LIGHT_STATES
from hydranet.geometry import BevGrid, wrap_angle
from hydranet.setup import OBJECT_CLASSES
from hydranet.world.extras import EXTRA_KINDS
from hydranet.world.render import RenderOutput
from hydranet.world.roads import ROAD, SIDEWALK_SURF
from hydranet.world.scene import Frame

_LINE_POINTS = 32
LINE_BEHIND, LINE_AHEAD = 25.0, 75.0  # metres of lane line around the ego
# Every kind of agent the world renders; label functions number classes in this order, ``in_vocabulary``
# renumbers them into a setup's vocabulary.
_WORLD_KINDS: tuple[str, ...] = OBJECT_CLASSES + EXTRA_KINDS
_ALIASES: dict[str, str] = {"cone": "traffic_cone"}  # world kind -> its name in nuScenes' vocabulary
_CLS = {name: i for i, name in enumerate(_WORLD_KINDS)}
_BEV = {name: i for i, name in enumerate(BEV_CLASSES)}
# BEV channel of each kind's footprint (barriers and lights have none).
_BEV_GROUPS = {"vehicle": ("car", "truck", "bus", "bicycle", "motorcycle"), "pedestrian": ("pedestrian",),
              "cone": ("cone",)}


def in_vocabulary(label: dict[str, Tensor], vocabulary: tuple[str, ...]) -> dict[str, Tensor]:
    """A ``detection2d``/``objects3d`` label whose ``classes`` index ``_WORLD_KINDS`` with classes renumbered
    into ``vocabulary`` (a kind by its name, or by ``_ALIASES``); objects of a kind the vocabulary lacks are
    left out. The label itself is returned when nothing changes (the world's own vocabulary)."""
    to = [vocabulary.index(k) if k in vocabulary else vocabulary.index(_ALIASES[k])
          if _ALIASES.get(k) in vocabulary else -1 for k in _WORLD_KINDS]
    if to[:len(vocabulary)] == list(range(len(vocabulary))) and len(vocabulary) == len(OBJECT_CLASSES) and \
            not any(int(c) >= len(OBJECT_CLASSES) for c in label["classes"].tolist()):
        return label  # the world's five in their own order: every id stays
    new = torch.tensor(to, dtype=torch.int64)[label["classes"]] if len(label["classes"]) else label["classes"]
    keep = new >= 0
    m = len(keep)
    return {k: (v[keep] if isinstance(v, Tensor) and v.ndim and len(v) == m else v) for k, v in label.items()} | {
        "classes": new[keep]}


def detection2d(frame: Frame, out: RenderOutput, min_pixels: int, min_fraction: float) -> dict[str, Tensor]:
    """Tight boxes of each object's *visible* pixels per camera, with visible fraction =
    visible pixels / pixels it would cover un-occluded. Tiny or nearly hidden objects are dropped."""
    n, h, w = out.instance.shape
    num_ids = out.full_pixels.shape[1]
    inst = out.instance.reshape(n, -1).long()
    cam = torch.arange(n)[:, None].expand_as(inst)
    key = (cam * num_ids + inst).reshape(-1)
    pix = torch.arange(h * w).expand(n, -1).reshape(-1)
    u, v = (pix % w).float(), torch.div(pix, w, rounding_mode="floor").float()
    size = n * num_ids
    count = torch.bincount(key, minlength=size)
    big = float(max(h, w) + 1)
    u0 = torch.full((size,), big).scatter_reduce(0, key, u, "amin")
    v0 = torch.full((size,), big).scatter_reduce(0, key, v, "amin")
    u1 = torch.full((size,), -1.0).scatter_reduce(0, key, u, "amax")
    v1 = torch.full((size,), -1.0).scatter_reduce(0, key, v, "amax")
    full = out.full_pixels.reshape(-1).clamp(min=1)
    visible = (count.float() / full.float()).clamp(max=1.0)
    kinds = {a.track_id: a.kind for a, _ in frame.agents}
    ids = torch.arange(size) % num_ids
    keep = (ids > 0) & (count >= min_pixels) & (visible >= min_fraction)
    keep &= torch.tensor([int(i) in kinds for i in ids.tolist()], dtype=torch.bool)
    sel = keep.nonzero().squeeze(1)
    boxes = torch.stack([u0[sel], v0[sel], u1[sel] + 1, v1[sel] + 1], 1)
    track = ids[sel]
    classes = torch.tensor([_CLS[kinds[int(i)]] for i in track.tolist()], dtype=torch.int64)
    return {"boxes": boxes.float(), "classes": classes, "camera": (sel // num_ids).long(),
            "visible": visible[sel].float(), "track_id": track.long()}


def traffic_lights(frame: Frame, det: dict[str, Tensor], out: RenderOutput) -> dict[str, Tensor]:
    """Boxes (a subset of ``detection2d``) of lights whose lit lamp shows in the image, with state and the
    ego-relative lane they govern. A light's state is labelled only where at least one pixel of its camera
    sees the lit lamp first (``RenderOutput.lamp_pixels``): a light seen from behind, a lamp hidden behind
    another object or cut off at the image's edge, and a lamp too small for any ray to hit show no state, so
    such a light stays a ``traffic_light`` object in ``detection2d`` only."""
    lights = {a.track_id: (a, pose) for a, pose in frame.agents if a.kind == "traffic_light"}
    lamp_pixels = out.lamp_pixels
    keep = [tid in lights and bool(lamp_pixels[cam, tid] > 0)
            for tid, cam in zip(det["track_id"].tolist(), det["camera"].tolist(), strict=True)]
    sel = torch.tensor(keep, dtype=torch.bool).reshape(-1)
    tracks = det["track_id"][sel]
    states = [LIGHT_STATES.index(lights[int(t)][0].state(frame.t)) for t in tracks.tolist()]
    lanes = [frame.scene.ego_lane - lights[int(t)][0].lane for t in tracks.tolist()]
    return {"boxes": det["boxes"][sel], "camera": det["camera"][sel], "state": torch.tensor(states, dtype=torch.int64),
            "lane": torch.tensor(lanes, dtype=torch.int64), "track_id": tracks}


def _to_ego(frame: Frame, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """World-frame ground points (x, y) in metres to the frame's ego frame (x forward, y left)."""
    ex, ey, eyaw = frame.ego
    c, s = math.cos(eyaw), math.sin(eyaw)
    dx, dy = x - ex, y - ey
    return c * dx + s * dy, -s * dx + c * dy


def objects3d(frame: Frame, det: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Ego-frame boxes of all agents within the cull radius; velocity is the agent's world velocity
    expressed in ego axes (not relative to the ego), as in nuScenes. With the frame's ``detection2d``
    label, ``visible`` is each object's largest visible fraction over the cameras (0 = occluded or too
    small to label in every camera): what occlusion-persistence metrics need."""
    eyaw = frame.ego[2]
    c, s = math.cos(eyaw), math.sin(eyaw)
    rows, vel, cls, tid = [], [], [], []
    for a, (x, y, yaw) in frame.agents:
        xe, ye = _to_ego(frame, torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
        vx, vy = a.velocity(frame.t)
        rows.append([float(xe), float(ye), a.z, *a.size, float(wrap_angle(torch.tensor(yaw - eyaw)))])
        vel.append([c * vx + s * vy, -s * vx + c * vy])
        cls.append(_CLS[a.kind])
        tid.append(a.track_id)
    out = {"boxes": torch.tensor(rows, dtype=torch.float32).reshape(-1, 7),
           "velocity": torch.tensor(vel, dtype=torch.float32).reshape(-1, 2),
           "classes": torch.tensor(cls, dtype=torch.int64), "track_id": torch.tensor(tid, dtype=torch.int64)}
    if det is not None:
        seen: dict[int, float] = {}
        for t, v in zip(det["track_id"].tolist(), det["visible"].tolist(), strict=True):
            seen[t] = max(seen.get(t, 0.0), v)
        out["visible"] = torch.tensor([seen.get(t, 0.0) for t in tid], dtype=torch.float32)
    return out


def lane_lines(frame: Frame) -> dict[str, Tensor]:
    """Main-road lines around the ego as ego-frame polylines of ``_LINE_POINTS`` points."""
    layout = frame.scene.layout
    u_ego = frame.scene.ego.s_at(frame.t)
    pts, kinds = [], []
    for lo, hi in layout.line_spans(u_ego - LINE_BEHIND, u_ego + LINE_AHEAD):
        u = torch.linspace(lo, hi, _LINE_POINTS, dtype=torch.float64)
        for d, kind in layout.lines():
            x, y, _ = layout.pose(u, torch.full_like(u, d))
            xe, ye = _to_ego(frame, x, y)
            pts.append(torch.stack([xe, ye, torch.zeros_like(xe)], -1))
            kinds.append(kind)
    points = torch.stack(pts).float() if pts else torch.zeros(0, _LINE_POINTS, 3)
    return {"points": points, "kind": torch.tensor(kinds, dtype=torch.int64)}


def bev_semantic(frame: Frame, objects: dict[str, Tensor], grid: BevGrid) -> Tensor:
    """Multi-label ``[len(BEV_CLASSES), R, C]`` uint8 map, rasterised analytically at cell centres.
    Objects (``objects3d`` with ``classes`` indexing ``_WORLD_KINDS``, before ``in_vocabulary``) mark their
    footprint in the channel of ``_BEV_GROUPS`` and the cell holding their centre, so small ones never vanish."""
    centres = grid.cell_centres(torch.float64)  # [R, C, 2] ego
    ex, ey, eyaw = frame.ego
    c, s = math.cos(eyaw), math.sin(eyaw)
    xe, ye = centres[..., 0].reshape(-1), centres[..., 1].reshape(-1)
    xw, yw = ex + c * xe - s * ye, ey + s * xe + c * ye
    g = frame.scene.layout.ground(xw.float(), yw.float())
    out = torch.zeros(len(BEV_CLASSES), grid.rows * grid.cols, dtype=torch.uint8)
    out[_BEV["drivable"]] = (g["surface"] == ROAD).to(torch.uint8)
    paint = torch.minimum(torch.minimum(g["dashed"], g["solid"]), g["other"])
    out[_BEV["lane_marking"]] = ((paint < grid.cell / 2) & (g["surface"] == ROAD)).to(torch.uint8)
    out[_BEV["sidewalk"]] = (g["surface"] == SIDEWALK_SURF).to(torch.uint8)
    boxes = objects["boxes"].double()
    for bev_name, kinds in _BEV_GROUPS.items():
        ids = [_WORLD_KINDS.index(k) for k in kinds]
        sel = torch.isin(objects["classes"], torch.tensor(ids))
        for bx, by, _, bl, bw, _, byaw in boxes[sel].tolist():
            cb, sb = math.cos(byaw), math.sin(byaw)
            dx, dy = xe - bx, ye - by
            inside = ((cb * dx + sb * dy).abs() <= bl / 2) & ((-sb * dx + cb * dy).abs() <= bw / 2)
            out[_BEV[bev_name]] |= inside.to(torch.uint8)
            r, col, ok = grid.cell_indices(torch.tensor([bx]), torch.tensor([by]))
            if bool(ok[0]):
                out[_BEV[bev_name], int(r[0]) * grid.cols + int(col[0])] = 1
    return out.reshape(len(BEV_CLASSES), grid.rows, grid.cols)


def ego_path(frame: Frame, steps: int, rate_hz: float) -> Tensor:
    """Future ego (x, y, yaw) at ``t + k / rate`` (k = 1..steps) in the current ego frame."""
    rows = []
    for k in range(1, steps + 1):
        x, y, yaw = frame.scene.ego_pose(frame.t + k / rate_hz)
        xe, ye = _to_ego(frame, torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
        rows.append([float(xe), float(ye), float(wrap_angle(torch.tensor(yaw - frame.ego[2])))])
    return torch.tensor(rows, dtype=torch.float32)
