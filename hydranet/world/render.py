"""Render one frame of a scene for every camera of the rig: RGB plus exact per-pixel labels.

Pipeline per frame (all cameras at once, all tensor ops):
1. world rays for every pixel (camera z = 1, so the hit parameter is z-depth);
2. ground plane hits (closed form) and box hits (``raycast.cast_boxes``); the nearer wins;
3. ground points ask the road layout for surface/paint (``roads.RoadLayout.ground``), box hits ask
   their material (``shade.prim_albedo``); lighting, fog, glare (bloom), vignetting, sensor noise;
4. labels straight from the same hits: depth, semantic, instance, lanes, drivable, and per-object
   un-occluded pixel counts for the visible fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from hydranet.geometry import ray_directions, yaw_transform
from hydranet.world.agents import MAT_SIGNAL, SEM
from hydranet.world.raycast import BoxHits, cast_boxes, cast_ground
from hydranet.world.roads import ROAD, SIDEWALK_SURF
from hydranet.world.scene import Frame
from hydranet.world.shade import LIGHTING, ground_albedo, prim_albedo, sky
from hydranet.world.shadows import lamp_lookup, shadow_lookup

_LAMP_RGB = torch.tensor([1.0, 0.85, 0.6])
_FOG_COLOUR = {"day": (0.74, 0.77, 0.80), "dusk": (0.62, 0.48, 0.44), "night": (0.05, 0.05, 0.07)}


@dataclass
class RenderOutput:
    """Everything one ray-cast frame yields for ``N`` cameras at ``H`` × ``W`` pixels (dtypes/shapes per field).

    ``depth`` is camera z-depth in metres (0 = sky or beyond ``max_depth``); ``lanes`` codes 0 none,
    1 dashed, 2 solid, 3 curb; ``instance`` 0 = background; ``T_world_from_ego`` is the ego pose.
    """
    images: Tensor  # uint8 [N, 3, H, W]
    depth: Tensor  # float32 [N, H, W]
    semantic: Tensor  # uint8 [N, H, W]
    instance: Tensor  # int32 [N, H, W]
    lanes: Tensor  # uint8 [N, H, W]
    drivable: Tensor  # uint8 [N, H, W]
    full_pixels: Tensor  # int64 [N, max_id + 1]: pixels each instance would cover un-occluded
    lamp_pixels: Tensor  # int64 [N, max_id + 1]: pixels where a traffic light's lit lamp is what the ray hits first
    T_world_from_ego: Tensor  # float64 [4, 4]


@lru_cache(maxsize=8)
def _rays(h: int, w: int, k_key: tuple[float, ...]) -> Tensor:
    K = torch.tensor(k_key, dtype=torch.float64).reshape(-1, 3, 3)
    return ray_directions(K, h, w).reshape(K.shape[0], h * w, 3)


@dataclass
class _Surface:
    """Shading inputs of the pixels that hit one kind of surface (ground or boxes), flat over N*H*W."""

    idx: Tensor  # int64 [P] flat pixel indices
    points: Tensor  # float32 [P, 3] world hit points
    dirs: Tensor  # float32 [P, 3] ray directions
    normals: Tensor  # float32 [P, 3]
    albedo: Tensor  # float32 [P, 3]


@dataclass
class _Labels:
    """Per-pixel label buffers, flat over N*H*W, filled in place by the surfaces that own the pixels."""

    semantic: Tensor  # uint8
    instance: Tensor  # int32
    lanes: Tensor  # uint8
    drivable: Tensor  # uint8


def render_frame(frame: Frame, K: Tensor, T_ego_from_cam: Tensor, h: int, w: int, *, sensor_noise: float = 2.0,
                 noise_seed: int = 0, max_depth: float = 250.0) -> RenderOutput:
    """Ray-cast ``frame`` from each camera: ``K [N, 3, 3]`` pixels, ``T_ego_from_cam [N, 4, 4]`` (OpenCV
    camera, metres), images ``h`` × ``w``. Shades ground paint and box prims with sun, shadows, fog,
    headlights and street lamps by ``frame.scene.lighting``, then adds vignette and Gaussian sensor noise
    (``sensor_noise`` in 8-bit levels, seeded by ``noise_seed``). Deterministic for the same inputs.
    """
    scene = frame.scene
    n, hw = K.shape[0], h * w
    T_we = yaw_transform(*frame.ego)
    T_wc = T_we @ T_ego_from_cam.double()
    R = T_wc[:, :3, :3]
    origins = T_wc[:, :3, 3].float()
    rays_cam = _rays(h, w, tuple(K.double().reshape(-1).tolist()))
    dirs = (rays_cam @ R.transpose(1, 2)).float().reshape(-1, 3)  # [N*HW, 3]
    Rf, Kf = R.float(), K.float()

    boxes = frame.prims["boxes"]
    hits = cast_boxes(boxes, origins, dirs, Rf, Kf, h, w)
    tg = cast_ground(origins, dirs, hw)
    is_box = hits.t < tg  # boxes stand on the ground, so a box hit is always the nearer one
    t = torch.where(is_box, hits.t, tg)
    is_ground = ~is_box & torch.isfinite(tg)
    night = {"day": 0.0, "dusk": 0.35, "night": 1.0}[scene.lighting]
    total = n * hw
    labels = _Labels(torch.zeros(total, dtype=torch.uint8), torch.zeros(total, dtype=torch.int32),
                     torch.zeros(total, dtype=torch.uint8), torch.zeros(total, dtype=torch.uint8))
    # (index_select/index_copy_ rather than x[idx]: several times faster on CPU)
    ground = _ground(frame, is_ground.nonzero().squeeze(1), t, dirs, origins, Kf, hw, labels)
    box, emit_b, lit_lamp = _boxes(frame, hits, is_box, t, dirs, origins, hw, night, labels)
    colour, keep = _lit_colour(frame, ground, box, emit_b, t, night, total)
    sky_idx = (~is_ground & ~is_box).nonzero().squeeze(1)
    images = _sky_and_sensor(frame, colour, dirs, sky_idx, box.idx, emit_b * keep[ground.idx.numel():], night,
                             (n, h, w), sensor_noise, noise_seed)

    depth = torch.where((is_box | is_ground) & (t <= max_depth), t, torch.zeros_like(t))
    num_ids = int(frame.prims["instance"].max().item()) + 1 if boxes.shape[0] else 1
    # Un-occluded: every (box, pixel) pair a ray crosses; lamps: the pixels whose first hit is a lit lamp.
    full = _instance_pixels(hits.pair_pix, frame.prims["instance"].index_select(0, hits.pair_prim), n, hw, num_ids)
    lamp_pix = box.idx[lit_lamp]
    lamps = _instance_pixels(lamp_pix, labels.instance.index_select(0, lamp_pix).long(), n, hw, num_ids)
    shape = (n, h, w)
    return RenderOutput(images, depth.reshape(shape), labels.semantic.reshape(shape), labels.instance.reshape(shape),
                        labels.lanes.reshape(shape), labels.drivable.reshape(shape), full,
                        lamps, T_we)


def _ground(frame: Frame, gi: Tensor, t: Tensor, dirs: Tensor, origins: Tensor, Kf: Tensor, hw: int,
            labels: _Labels) -> _Surface:
    """Ground pixels ``gi``: the road layout's surface and paint (anti-aliased over a pixel's footprint)
    give albedo, semantic, drivable and lane labels."""
    cam_g = torch.div(gi, hw, rounding_mode="floor")
    tg_i = t.index_select(0, gi)
    dg = dirs.index_select(0, gi)
    pg = origins.index_select(0, cam_g) + tg_i[:, None] * dg
    g = frame.scene.layout.ground(pg[:, 0], pg[:, 1])
    footprint = tg_i / Kf[:, 0, 0].index_select(0, cam_g) * 1.2  # metres per pixel, for anti-aliased paint
    cover = [((0.5 - g[k] / footprint).clamp(0, 1)) for k in ("dashed", "solid", "other")]
    paint = torch.maximum(torch.maximum(cover[0], cover[1]), cover[2])
    albedo_g = ground_albedo(g["surface"], g["curb"], paint, g["yellow"], pg[:, 0], pg[:, 1], g["u"], g["d"])
    road = g["surface"] == ROAD
    marked = road & (torch.minimum(torch.minimum(g["dashed"], g["solid"]), g["other"]) < 0)
    sem_g = torch.where(road, SEM["road"], torch.where(g["surface"] == SIDEWALK_SURF, SEM["sidewalk"], SEM["terrain"]))
    sem_g = torch.where(marked, SEM["lane_marking"], sem_g)
    labels.semantic.index_copy_(0, gi, sem_g.to(torch.uint8))
    labels.drivable.index_copy_(0, gi, road.to(torch.uint8))
    kind = torch.where(g["solid"] < 0, 2, torch.where(g["dashed"] < 0, 1, 0))
    kind = torch.where(g["curb"], 3, torch.where(road, kind, 0))
    labels.lanes.index_copy_(0, gi, kind.to(torch.uint8))
    up = torch.tensor([[0.0, 0.0, 1.0]]).expand(gi.numel(), 3)
    return _Surface(gi, pg, dg, up, albedo_g)


def _boxes(frame: Frame, hits: BoxHits, is_box: Tensor, t: Tensor, dirs: Tensor, origins: Tensor, hw: int,
           night: float, labels: _Labels) -> tuple[_Surface, Tensor, Tensor]:
    """Box pixels (the winning prim of each pixel that a box hit first): material albedo and emission
    (lamps, lit windows, tail lights) from ``prim_albedo``, semantic and instance labels, and which of them
    show a traffic light's lit lamp (bool, one per box pixel)."""
    sel = is_box.index_select(0, hits.win_pix).nonzero().squeeze(1)
    bi = hits.win_pix.index_select(0, sel)
    axis, sign, local = hits.axis.index_select(0, sel), hits.sign.index_select(0, sel), hits.local.index_select(0, sel)
    prim = hits.prim.index_select(0, bi)
    db = dirs.index_select(0, bi)
    pb = origins.index_select(0, torch.div(bi, hw, rounding_mode="floor")) + t.index_select(0, bi)[:, None] * db
    pr = {k: v.index_select(0, prim) for k, v in frame.prims.items()}
    c, s = torch.cos(pr["boxes"][:, 6]), torch.sin(pr["boxes"][:, 6])
    nl = F.one_hot(axis, 3).float() * sign.float()[:, None]
    nb = torch.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], 1)
    view = db / db.norm(dim=1, keepdim=True)
    refl = view - 2 * (view * nb).sum(1, keepdim=True) * nb
    albedo_b, emit_b = prim_albedo(pr["material"], pr["colour"], pr["extra"], local, axis, sign,
                                   pr["boxes"][:, 3:6], pr["boxes"][:, 2], prim.float(), night, refl,
                                   frame.scene.lighting)
    labels.semantic.index_copy_(0, bi, pr["semantic"].to(torch.uint8))
    labels.instance.index_copy_(0, bi, pr["instance"].to(torch.int32))
    lit_lamp = (pr["material"] == MAT_SIGNAL) & (emit_b.amax(1) > 0)
    return _Surface(bi, pb, db, nb, albedo_b), emit_b, lit_lamp


def _lit_colour(frame: Frame, ground: _Surface, box: _Surface, emit_b: Tensor, t: Tensor, night: float,
                total: int) -> tuple[Tensor, Tensor]:
    """Colour ``[N*H*W, 3]`` of ground and box pixels lit together (ambient + ambient occlusion, sun with
    shadows, headlights and street lamps at night) and fogged by distance; also the fog transmittance
    ``keep [P, 1]`` of those pixels (ground first), which dims the glare of emissive prims."""
    scene = frame.scene
    amb, sun_rgb, _, _, haze = LIGHTING[scene.lighting]
    fog_col = torch.tensor(_FOG_COLOUR[scene.lighting])
    idx = torch.cat([ground.idx, box.idx])
    pts = torch.cat([ground.points, box.points])
    nrm = torch.cat([ground.normals, box.normals])
    ao, shadow = shadow_lookup(frame, scene.sun, ground.points[:, 0], ground.points[:, 1])
    ones = torch.ones(box.idx.numel())
    light = torch.tensor(amb) * ((0.8 + 0.2 * nrm[:, 2]) * torch.cat([1 - 0.6 * ao, ones]))[:, None]
    if night < 1.0:
        sun = torch.tensor(scene.sun, dtype=torch.float32)
        direct = (nrm @ sun).clamp(min=0) * torch.cat([1 - 0.85 * shadow, ones])
        light = light + torch.tensor(sun_rgb) * direct[:, None]
    if night > 0:
        lamp = lamp_lookup(frame, pts[:, 0], pts[:, 1]) * nrm[:, 2].clamp(min=0.5)
        light = light + night * _headlights(pts, nrm, *frame.ego) + night * lamp[:, None] * _LAMP_RGB
    emit = torch.cat([torch.zeros(ground.idx.numel(), 3), emit_b])
    dist = t.index_select(0, idx) * torch.cat([ground.dirs, box.dirs]).norm(dim=1)
    keep = torch.exp(-(scene.fog + haze) * dist)[:, None]
    lit = torch.cat([ground.albedo, box.albedo]) * light
    colour = torch.zeros(total, 3)
    colour.index_copy_(0, idx, (lit + emit) * keep + fog_col * (1 - keep))
    return colour, keep


def _sky_and_sensor(frame: Frame, colour: Tensor, dirs: Tensor, si: Tensor, bi: Tensor, glow_b: Tensor,
                    night: float, shape: tuple[int, int, int], sensor_noise: float, noise_seed: int) -> Tensor:
    """Fill the sky pixels ``si``, add glare around emissive box pixels at night, vignette and sensor noise;
    uint8 images ``[N, 3, H, W]``."""
    scene = frame.scene
    n, h, w = shape
    fog_col = torch.tensor(_FOG_COLOUR[scene.lighting])
    sky_col = sky(dirs.index_select(0, si), scene.lighting, scene.sun, scene.distant_lights)
    if scene.fog > 0:
        sky_col = torch.lerp(sky_col, fog_col.expand_as(sky_col), min(1.0, scene.fog / 0.012) * 0.95)
    colour.index_copy_(0, si, sky_col)
    img = colour.reshape(n, h, w, 3).permute(0, 3, 1, 2)
    if night > 0:
        glow = torch.zeros(n * h * w, 3).index_copy_(0, bi, glow_b)
        img = img + 0.6 * _blur(glow.reshape(n, h, w, 3).permute(0, 3, 1, 2), sigma=2.0 * w / 256)
    img = img * _vignette(h, w)
    if sensor_noise > 0:
        img = img + _noise(img.numel(), noise_seed).reshape(img.shape) * (sensor_noise * (1 + night) / 255.0)
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


@lru_cache(maxsize=4)
def _vignette(h: int, w: int) -> Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return 1 - 0.18 * (xx ** 2 + yy ** 2) / 2


@lru_cache(maxsize=2)
def _noise_bank(numel: int) -> Tensor:
    return torch.randn(2 * numel, generator=torch.Generator().manual_seed(20240611))


def _noise(numel: int, seed: int) -> Tensor:
    """Unit Gaussian sensor noise: a window of a fixed bank at a seeded offset (5x cheaper than
    drawing 786k normals per frame, and just as deterministic)."""
    off = int(torch.randint(0, numel, (1,), generator=torch.Generator().manual_seed(seed)))
    return _noise_bank(numel)[off:off + numel]


def _headlights(pts: Tensor, nrm: Tensor, ex: float, ey: float, eyaw: float) -> Tensor:
    """The ego's low beams: a cone ahead of the car, falling off with distance."""
    c, s = math.cos(eyaw), math.sin(eyaw)
    dx, dy = pts[:, 0] - ex, pts[:, 1] - ey
    xf, yl = c * dx + s * dy, -s * dx + c * dy
    beam = torch.exp(-(yl / (0.32 * xf.clamp(min=0) + 0.9)) ** 2) * (xf > 2.0).float()
    beam = beam * 1.8 / (1 + (xf / 20.0) ** 2) * torch.exp(-(pts[:, 2] / 3.0) ** 2)
    facing = torch.maximum(nrm[:, 2] * 0.8, -(nrm[:, 0] * c + nrm[:, 1] * s)).clamp(min=0.15)
    return (beam * facing)[:, None] * torch.tensor([1.0, 0.95, 0.82])


def _blur(x: Tensor, sigma: float) -> Tensor:
    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


def _instance_pixels(pair_pix: Tensor, pair_inst: Tensor, n: int, hw: int, num_ids: int) -> Tensor:
    """``[n, num_ids]`` int64: how many distinct pixels of each camera the (pixel, instance) pairs give each
    instance > 0 (a pixel named twice for one instance, e.g. by two of its boxes, counts once)."""
    keep = pair_inst > 0
    keys = torch.unique(pair_inst[keep] * (n * hw) + pair_pix[keep])
    inst, pix = keys // (n * hw), keys % (n * hw)
    cam = pix // hw
    return torch.bincount(cam * num_ids + inst, minlength=n * num_ids).reshape(n, num_ids)
