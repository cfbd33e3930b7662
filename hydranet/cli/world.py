"""CLI commands: ``hydranet show`` (draw one sample of the world or of shards, with its ground truth)."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from hydranet.cli.app import app
from hydranet.cli.errors import cli_errors, fail
from hydranet.config_errors import field_messages
from hydranet.data import Sample
from hydranet.datasets import dataset_setup, open_data_option
from hydranet.geometry import BevGrid
from hydranet.setup import Setup, class_names
from hydranet.train import world_from_file
from hydranet.viz import (
    DRIVABLE_COLOR,
    EGO_PATH_COLOR,
    Views,
    draw_bev_map,
    draw_boxes2d,
    draw_boxes3d,
    draw_lane_masks,
    draw_mask,
    draw_polylines_bev,
    draw_sparse_depth,
    draw_traffic_lights,
    lane_color,
)
from hydranet.world import SyntheticWorld, WorldConfig


def _overlay(sample, grid, scale: float, boxes3d_in_cameras: bool, title: str, overlay: bool = True,
             setup: Setup | None = None):
    """Compose the picture: cameras with drivable/lanes/boxes/lights, BEV with map/lines/objects/path; class
    names from the data's ``setup`` (its vocabularies; default the world's five)."""
    import torch

    lab = sample.labels if overlay else {k: v for k, v in sample.labels.items() if k in ("bev_semantic", "objects3d",
                                                                                      "lane_lines", "ego_path")}
    views = Views.from_sample(sample, grid, scale=scale)
    if "depth" in sample.labels and float((sample.labels["depth"] > 0).float().mean()) < 0.3:
        draw_sparse_depth(views, sample.labels["depth"])  # lidar depth: dots in the cameras and the BEV
    if "drivable" in lab:
        draw_mask(views, lab["drivable"].bool(), DRIVABLE_COLOR, 0.13, name="drivable")  # as every picture draws it
    if "lanes" in lab:
        draw_lane_masks(views, lab["lanes"], alpha=0.85)
    if boxes3d_in_cameras and "objects3d" not in lab and overlay:
        # --boxes3d on a frame whose 3D label is absent (partial labels): its 2D boxes instead, and why.
        views.note("objects3d: no label on this frame" + (", its 2D boxes drawn instead" if "detection2d" in lab
                                                           else ""))
    if "detection2d" in lab and not (boxes3d_in_cameras and "objects3d" in lab):
        det = lab["detection2d"]
        names = class_names(setup, "detection2d")
        light = det["classes"] == (names.index("traffic_light") if "traffic_light" in names else -1)
        draw_boxes2d(views, det["boxes"][~light], det["camera"][~light], det["classes"][~light], names=names,
                     dashed=True)
    if "traffic_light" in lab:
        tl = lab["traffic_light"]
        draw_traffic_lights(views, tl["boxes"], tl["camera"], tl["state"], tl.get("lane"), dashed=True)
    if "bev_semantic" in lab:
        draw_bev_map(views, lab["bev_semantic"])
    if "lane_lines" in lab:
        ll = lab["lane_lines"]
        cols = [lane_color(int(k)) for k in ll["kind"]]
        draw_polylines_bev(views, ll["points"], cols, width=1)
    if "objects3d" in lab:
        ob = lab["objects3d"]
        draw_boxes3d(views, ob["boxes"], ob["classes"], cameras=boxes3d_in_cameras,
                     names=class_names(setup, "objects3d"), dashed=True)
    if "ego_path" in lab:
        path = lab["ego_path"]
        pts = torch.cat([torch.zeros(1, 3), torch.cat([path[:, :2], torch.zeros(len(path), 1)], 1)])
        draw_polylines_bev(views, pts[None], EGO_PATH_COLOR, width=3, name="ego path")
    return views.compose(title=title)


def _dataset_sample(data: str, index: int) -> tuple[Sample, BevGrid, str, Setup]:
    """Sample ``index`` of the dataset ``--data`` names, its BEV grid (the default grid when the source
    has none), a title and the dataset's setup; a bad source or index is one error line, exit 2."""
    with cli_errors():  # SourceError/SourceConfigError/ShardError: one error line, exit 2
        ds = open_data_option(data)
        if index >= len(ds):
            raise fail(f"--index {index}: {data} holds {len(ds)} samples")
        sample = ds[index]
        setup = dataset_setup(ds)
    title = f"{data} #{index}  {sample.scene_id} frame {sample.frame_index}"
    return sample, setup.grid if setup.grid is not None else BevGrid(), title, setup


def _world_sample(config: Path | None, overrides: dict, index: int) -> tuple[Sample, BevGrid, str, Setup]:
    """Sample ``index`` of the synthetic world (``--config`` plus overrides; scenes added when ``index`` is
    past the end), its grid and a title naming the scene's lighting, fog and road."""
    if config is not None and not config.is_file():
        raise typer.BadParameter(f"{config}: no such file", param_hint="--config")
    try:
        cfg, _ = world_from_file(config, None, overrides)  # a training config: its world, its model's setup
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    world = SyntheticWorld(cfg)
    if index >= len(world):
        cfg = cfg.model_copy(update={"num_scenes": index // cfg.frames_per_scene + 1})
        world = SyntheticWorld(cfg)
    sample = world[index]
    scene = world.scene(index)
    road = "intersection" if scene.layout.cross_u is not None else (
        "curve" if scene.layout.curvature != 0 else "straight")
    title = (f"seed {cfg.seed} #{index}  {sample.scene_id} frame {sample.frame_index}  {scene.lighting}, "
             f"fog {scene.fog:.3f}, {road}, {scene.layout.lanes} lanes/dir")
    return sample, world.setup.grid or BevGrid(), title, world.setup


def _world_choice(name: str, value: str) -> str:
    """``--lighting``/``--layout`` (``name``) checked against the values the world takes (``WorldConfig``'s own
    field): a bad one is ``typer.BadParameter`` naming the option and every accepted value (exit 2)."""
    try:
        WorldConfig.model_validate({name: value})
    except ValidationError as e:
        raise typer.BadParameter(field_messages(e)[name], param_hint=f"--{name}") from None
    return value


@app.command()
def show(
    index: int = typer.Option(0, "--index", "-i", min=0,
                              help="Sample index (world: scene = index // frames_per_scene)."),
    seed: int = typer.Option(None, "--seed", help="World seed (overrides the config's)."),
    out: Path = typer.Option(Path("show.png"), "--out", "-o", help="Output PNG."),
    data: str = typer.Option(None, "--data", "-d", help="Read the sample from a dataset instead of rendering the "
                             "world: a shard directory (or manifest.json), KIND:PATH of a registered source "
                             "(e.g. nuscenes:/data/nuscenes), or a source config YAML with `kind:`."),
    config: Path = typer.Option(None, "--config", "-c", help="WorldConfig YAML (a training config's `world:` "
                                "section works too)."),
    lighting: str = typer.Option(None, "--lighting", help="day | dusk | night | random"),
    layout: str = typer.Option(None, "--layout", help="straight | curve | intersection | random"),
    fog: str = typer.Option(None, "--fog", help="Fog extinction per metre (0 = clear, 0.03 = dense) or 'random'."),
    scale: int = typer.Option(2, "--scale", min=1, max=8, help="Upscale factor of the camera tiles."),
    camera_width: int = typer.Option(640, "--camera-width", min=0, help="Downscale camera tiles wider than this "
                                     "many pixels (large real frames, e.g. nuScenes 1600 px) to it; 0 = never."),
    boxes3d: bool = typer.Option(False, "--boxes3d", help="Project the 3D boxes into the cameras instead of "
                                 "drawing the 2D boxes."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Draw ground truth on the camera images "
                                 "(the BEV panel always shows it)."),
) -> None:
    """Draw one sample as a PNG: the rig's cameras laid out as on the car with ground truth overlaid
    (drivable area, lane markings, 2D boxes, traffic-light states) and a BEV panel (road map,
    lane lines, 3D boxes, ego path, camera frustums)."""
    import torch

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))

    overrides: dict = {}
    if seed is not None:
        overrides["seed"] = seed
    for name, value in (("lighting", lighting), ("layout", layout)):
        if value is not None:
            overrides[name] = _world_choice(name, value)
    if fog is not None:
        try:
            overrides["fog"] = fog if fog == "random" else float(fog)
        except ValueError:
            raise typer.BadParameter(f"expected a number or 'random', got {fog!r}", param_hint="--fog") from None
    if data is not None:
        if overrides or config is not None:
            raise typer.BadParameter("world options (--seed/--lighting/--layout/--fog/--config) do not apply "
                                     "to --data", param_hint="--data")
        sample, grid, title, setup = _dataset_sample(data, index)
    else:
        sample, grid, title, setup = _world_sample(config, overrides, index)
    width = int(sample.images.shape[-1])
    tile_scale = camera_width / width if camera_width and width * scale > camera_width else scale
    image = _overlay(sample, grid, tile_scale, boxes3d, title, overlay, setup=setup)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    typer.echo(f"wrote {out} ({image.width}x{image.height})")
