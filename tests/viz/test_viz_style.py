"""Class colours (every class of the world's and nuScenes' vocabularies its own, a user's class a stable one) and
the images a picture is drawn on."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hydranet.geometry import BevGrid
from hydranet.setup import NUSCENES_CLASSES, OBJECT_CLASSES, default_rig
from hydranet.viz import Views
from hydranet.viz.style import DRIVABLE_COLOR, EGO_PATH_COLOR, LANE_COLORS, LIGHT_COLORS, class_color, lane_color


def test_each_vocabulary_class_has_its_own_colour():
    for vocabulary in (OBJECT_CLASSES, NUSCENES_CLASSES):
        colours = [class_color(c) for c in vocabulary]
        assert len(set(colours)) == len(vocabulary), dict(zip(vocabulary, colours, strict=True))
        assert (255, 255, 255) not in colours and EGO_PATH_COLOR not in colours


def test_lane_kinds_take_no_colour_near_a_class_light_region_or_path():
    """A lane stroke must not read as a box of a class or a light state in the same picture (before: solid lanes
    were a car's cyan, dashed ones a cone's and a yellow light's yellow, road edges a red light's red)."""
    others = {**{c: class_color(c) for c in (*OBJECT_CLASSES, *NUSCENES_CLASSES)},
              **{f"{s} light": c for s, c in LIGHT_COLORS.items()},
              "drivable": DRIVABLE_COLOR, "ego path": EGO_PATH_COLOR}
    for kind, lane in LANE_COLORS.items():
        near = {name: c for name, c in others.items()
                if sum((a - b) ** 2 for a, b in zip(lane, c, strict=True)) < 60**2}
        assert not near, (kind, lane, near)
    assert lane_color(99) not in LANE_COLORS.values()  # a kind outside the palette: grey, not a kind's colour


def test_a_users_class_keeps_its_colour_across_processes():
    here = class_color("forklift")
    there = subprocess.run([sys.executable, "-c", "from hydranet.viz.style import class_color; "
                            "print(tuple(class_color('forklift')))"], capture_output=True, text=True, check=True)
    assert str(tuple(here)) == there.stdout.strip()
    assert class_color("forklift") != (255, 255, 255)


def test_views_refuse_images_scaled_to_0_1():
    rig = default_rig((32, 64))
    args = (rig.intrinsics(), rig.extrinsics(), [c.name for c in rig.cameras], BevGrid())
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
        Views(torch.full((len(rig), 3, 32, 64), 0.35), *args)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        Views(torch.zeros(len(rig), 32, 64), *args)
    Views(torch.full((len(rig), 3, 32, 64), 90.0), *args)  # float in 0-255 is fine
    Views(torch.zeros(len(rig), 3, 32, 64, dtype=torch.uint8), *args)  # so is a black uint8 frame
