"""hydranet.train.report.choose_frames: the demo's pictures are chosen by their labels to show every object
class and every light state the held-out frames hold, and say what none holds."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from hydranet.data.sample import LIGHT_STATES, OBJECT_CLASSES
from hydranet.setup import NUSCENES_CLASSES, Setup
from hydranet.train.report import choose_frames


def _frame(classes: list[str], lights: list[str], vocabulary: tuple[str, ...] = OBJECT_CLASSES):
    cls = torch.tensor([vocabulary.index(c) for c in classes], dtype=torch.long)
    states = torch.tensor([LIGHT_STATES.index(s) for s in lights], dtype=torch.long)
    labels = {"detection2d": {"classes": cls}, "objects3d": {"classes": cls}}
    return SimpleNamespace(labels=labels | ({"traffic_light": {"state": states}} if lights else {}))


def test_cover_every_class_and_light_state_and_name_what_is_missing():
    frames = [_frame(["car"], []), _frame(["car", "car", "truck"], ["green"]), _frame(["pedestrian"], ["red"]),
              _frame(["cone", "traffic_light"], ["red", "green"]), _frame(["car"], [])]
    chosen, missing = choose_frames(frames, len(frames), 3)
    assert len(chosen) == 3 and chosen == sorted(chosen)
    shown = set()
    for i in chosen:
        f = frames[i]
        shown |= {OBJECT_CLASSES[c] for c in f.labels["detection2d"]["classes"].tolist()}
        shown |= {LIGHT_STATES[s] for s in f.labels["traffic_light"]["state"].tolist()}
    assert {"car", "truck", "pedestrian", "cone", "traffic_light", "red", "green"} <= shown
    assert missing == {"light yellow"}


def test_classes_are_named_by_the_setups_vocabulary():
    setup = Setup(classes={"detection2d": "nuscenes", "objects3d": "nuscenes"})
    frames = [_frame(["car"], [], NUSCENES_CLASSES), _frame(["barrier", "motorcycle"], [], NUSCENES_CLASSES)]
    chosen, missing = choose_frames(frames, len(frames), 2, setup)
    assert chosen == [0, 1]
    assert {"car", "barrier", "motorcycle"}.isdisjoint(missing) and "bus" in missing and "cone" not in missing
