"""hydranet.viz draws where it should, and `hydranet show` writes the picture."""

import functools
import json

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from hydranet.cli import app
from hydranet.data.sample import OBJECT_CLASSES
from hydranet.geometry import BevGrid
from hydranet.viz import (
    CLASS_COLORS,
    Views,
    draw_bev_map,
    draw_boxes2d,
    draw_boxes3d,
    draw_lane_masks,
    draw_mask,
    draw_polylines_bev,
    draw_traffic_lights,
)
from hydranet.world import SyntheticWorld, WorldConfig

H, W = 48, 96


@functools.cache
def sample():
    return SyntheticWorld(WorldConfig(setup={"image_size": (H, W)}, num_scenes=1, frames_per_scene=2))[0]


def test_views_geometry_and_compose():
    grid = BevGrid()
    views = Views.from_sample(sample(), grid, scale=2)
    assert len(views.cameras) == 8 and views.cameras[0].size == (W * 2, H * 2)
    u, v = views.bev_px(0.0, 0.0)
    assert abs(u - views.bev.width / 2) < 1 and abs(v - views.bev.height / 2) < 1
    u, v = views.bev_px(30.0, 10.0)  # ahead and to the left: up and left in the panel
    assert u < views.bev.width / 2 and v < views.bev.height / 2
    img = views.compose(title="t")
    assert isinstance(img, Image.Image) and img.width > 5 * W * 2 and img.height >= 2 * H * 2


def test_primitives_draw_in_the_right_place():
    s = sample()
    views = Views.from_sample(s, BevGrid(), scale=2)
    draw_boxes2d(views, torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([3]), torch.tensor([0]))
    px = np.asarray(views.cameras[3])[40, 20 * 2 + 10]  # on the bottom edge (y2 - 1 = 29 -> 58..59 scaled)
    edge = np.asarray(views.cameras[3])[58, 40]
    assert tuple(edge) == CLASS_COLORS["car"] and tuple(px) != CLASS_COLORS["car"]
    before = np.asarray(views.cameras[0]).astype(int)
    mask = torch.zeros(8, H, W, dtype=torch.bool)
    mask[0, :, : W // 2] = True
    draw_mask(views, mask, (255, 0, 0), alpha=0.5)
    after = np.asarray(views.cameras[0]).astype(int)
    assert (after[:, :W // 2 * 2 - 2, 0] >= before[:, :W // 2 * 2 - 2, 0]).all()
    assert np.array_equal(after[:, W + 2:], before[:, W + 2:])
    draw_lane_masks(views, s.labels["lanes"])
    draw_traffic_lights(views, torch.tensor([[5.0, 5.0, 8.0, 12.0]]), [0], [2], [0])
    bev_before = np.asarray(views.bev).copy()
    draw_boxes3d(views, torch.tensor([[10.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0]]), [0])
    u, v = views.bev_px(12.25, 0.0)  # front edge of that box
    assert not np.array_equal(np.asarray(views.bev)[round(v), round(u)], bev_before[round(v), round(u)])
    draw_bev_map(views, s.labels["bev_semantic"])
    draw_polylines_bev(views, s.labels["lane_lines"]["points"], (255, 255, 0), cameras=True)
    assert views.compose().size[0] > 0


def test_show_command_writes_a_png(tmp_path):
    cfg = tmp_path / "world.yaml"
    cfg.write_text(f"setup: {{image_size: [{H}, {W}]}}\nframes_per_scene: 5\n")
    out = tmp_path / "show.png"
    res = CliRunner().invoke(app, ["show", "--index", "7", "--config", str(cfg), "--lighting", "night",
                                   "--out", str(out), "--scale", "1"])
    assert res.exit_code == 0, res.output
    img = Image.open(out)
    assert img.width > 5 * W
    # A bad world option names the option typed and every value it takes (before: "world config: lighting: ...",
    # a file the user did not give).
    for option, value, accepted in (("--lighting", "noon", "'day', 'dusk', 'night' or 'random'"),
                                    ("--layout", "loop", "'straight', 'curve', 'intersection' or 'random'")):
        bad = CliRunner().invoke(app, ["show", "--config", str(cfg), option, value, "--out", str(out)])
        assert bad.exit_code == 2, bad.output
        assert f"error: {option}: unknown '{value}'; expected {accepted}" in " ".join(bad.output.split()), bad.output


def _one_camera(width: int = 1280, height: int = 720):
    K = torch.tensor([[1000.0, 0, width / 2], [0, 1000.0, height / 2], [0, 0, 1]])[None]
    T = torch.tensor([[0.0, 0, 1, 1.5], [-1, 0, 0, 0], [0, -1, 0, 1.4], [0, 0, 0, 1]])[None]
    return torch.full((1, 3, height, width), 90, dtype=torch.uint8), K, T


def test_legend_lists_only_drawn_styles_and_wraps_inside_a_canvas_as_wide_as_the_title():
    images, K, T = _one_camera(320, 180)
    long_title = "bdd100k:some/long/path/to/a/folder/of/frames #0  bdd100k/0ace96c3-48481887 frame 0"
    boxes = torch.tensor([[10.0 + 40 * k, 20, 40 + 40 * k, 60] for k in range(len(OBJECT_CLASSES))])

    def drawn(styles: tuple[str, ...]) -> Views:
        v = Views(images, K, T, ["front"], BevGrid(), scale=1)
        for style in styles:  # the legend lists the line styles of the boxes drawn, nothing else
            draw_boxes2d(v, boxes, [0] * len(boxes), list(range(len(boxes))), dashed=style == "ground truth")
        assert v.outline_styles == set(styles)
        return v

    both = drawn(("prediction", "ground truth")).compose(title=long_title)
    only_gt = drawn(("ground truth",)).compose(title=long_title)
    nothing = Views(images, K, T, ["front"], BevGrid(), scale=1).compose(title=long_title)
    assert only_gt.width >= 16 + 8 * len(long_title) // 2  # the title is not cut off at the camera + BEV width
    assert only_gt.width > 320 + 2 * 180 + 8
    # Wrapping the legend adds rows below the cameras; fewer swatches ("prediction" gone) never add rows, and
    # a picture with nothing drawn has no swatch at all (the legend lists what is drawn).
    assert both.height >= only_gt.height > nothing.height
    footer = np.asarray(only_gt)[180 + 28:, :, :].astype(int)
    assert (footer.max(axis=2) > 200).any(axis=1).sum() > 0  # legend text drawn


def test_show_downscales_large_real_frames(tmp_path, monkeypatch):
    import hydranet.cli.world as world_cli

    seen = {}
    original = world_cli._overlay

    def spy(sample, grid, scale, *args, **kwargs):
        seen["scale"] = scale
        return original(sample, grid, scale, *args, **kwargs)

    monkeypatch.setattr(world_cli, "_overlay", spy)
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(np.full((720, 1280, 3), 120, np.uint8)).save(frames / "a.jpg")
    res = CliRunner().invoke(app, ["show", "--data", f"bdd100k:{frames}", "-o", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    assert seen["scale"] == 0.5  # 1280 px at --scale 2 -> 640 px tiles (--camera-width 640)
    assert Image.open(tmp_path / "s.png").width < 1400
    res = CliRunner().invoke(app, ["show", "--data", f"bdd100k:{frames}", "--camera-width", "0", "--scale", "1",
                                   "-o", str(tmp_path / "t.png")])
    assert res.exit_code == 0 and seen["scale"] == 1 and Image.open(tmp_path / "t.png").width > 2000


def test_show_draws_lights_that_govern_no_known_lane(tmp_path):
    # BDD100K says nothing about which lane a light governs, so its traffic_light labels carry no `lane` field
    # (before: `show` failed with "error: lane").
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(np.full((720, 1280, 3), 120, np.uint8)).save(frames / "a.jpg")
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"name": "a.jpg", "labels": [{"category": "traffic light", "attributes": {
        "trafficLightColor": "R"}, "box2d": {"x1": 600, "y1": 100, "x2": 620, "y2": 140}}]}]))
    source = tmp_path / "bdd.yaml"
    source.write_text(json.dumps({"kind": "bdd100k", "root": str(frames), "detection": str(det)}))
    res = CliRunner().invoke(app, ["show", "--data", str(source), "-o", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "s.png").width > 100


def _composed(monkeypatch) -> list[tuple[set[str], list[str]]]:
    """What every picture composed from now on held when composed: its box line styles and its footer notes."""
    from hydranet.viz import Views as ViewsClass

    seen: list[tuple[set[str], list[str]]] = []
    original = ViewsClass.compose

    def spy(self, *args, **kwargs):
        seen.append((set(self.outline_styles), list(self.notes)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ViewsClass, "compose", spy)
    return seen


def test_show_draws_labels_as_ground_truth(tmp_path, monkeypatch):
    # `show` draws labels only: its legend says "ground truth" (dashed), never "prediction" (before: solid boxes
    # listed as predictions).
    seen = _composed(monkeypatch)
    res = CliRunner().invoke(app, ["show", "--index", "3", "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    assert [styles for styles, _ in seen] == [{"ground truth"}]
    res = CliRunner().invoke(app, ["show", "--index", "3", "--boxes3d", "--out", str(tmp_path / "t.png")])
    assert res.exit_code == 0 and seen[-1][0] == {"ground truth"}


def test_show_boxes3d_on_a_frame_without_a_3d_label_draws_its_2d_boxes_and_says_why(monkeypatch):
    """Before: --boxes3d left the cars of such a frame (partial labels) without any box and without a word."""
    from hydranet.cli.world import _overlay
    from hydranet.world import SyntheticWorld, WorldConfig

    seen = _composed(monkeypatch)
    world = SyntheticWorld(WorldConfig(seed=3, num_scenes=1, frames_per_scene=1, setup={"image_size": [64, 128]}))
    sample = world[0]
    del sample.labels["objects3d"]
    _overlay(sample, world.setup.grid, 1.0, True, "t", setup=world.setup)
    assert "objects3d: no label on this frame, its 2D boxes drawn instead" in seen[-1][1]
