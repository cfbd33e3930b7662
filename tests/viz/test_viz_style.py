"""Class colours: every class of the world's and nuScenes' vocabularies its own, a user's class a stable one."""

from __future__ import annotations

import subprocess
import sys

from hydranet.setup import NUSCENES_CLASSES, OBJECT_CLASSES
from hydranet.viz.style import EGO_PATH_COLOR, class_color


def test_each_vocabulary_class_has_its_own_colour():
    for vocabulary in (OBJECT_CLASSES, NUSCENES_CLASSES):
        colours = [class_color(c) for c in vocabulary]
        assert len(set(colours)) == len(vocabulary), dict(zip(vocabulary, colours, strict=True))
        assert (255, 255, 255) not in colours and EGO_PATH_COLOR not in colours


def test_a_users_class_keeps_its_colour_across_processes():
    here = class_color("forklift")
    there = subprocess.run([sys.executable, "-c", "from hydranet.viz.style import class_color; "
                            "print(tuple(class_color('forklift')))"], capture_output=True, text=True, check=True)
    assert str(tuple(here)) == there.stdout.strip()
    assert class_color("forklift") != (255, 255, 255)
