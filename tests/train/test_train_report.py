"""hydranet.train.report: the demo's pictures are chosen by their labels to show every object class and every light
state the held-out frames hold, and say what none holds (``choose_frames``); its metrics.md says what it measured
(``write_metrics_report``); the demo counts an install only when it ran one."""

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


def test_metrics_report_says_when_training_was_reused_and_that_a_video_model_was_scored_frame_by_frame(tmp_path):
    """Before: a demo that reused its finished run wrote "0 s of training", and a video model's table did not say
    its memory was reset at every frame."""
    from hydranet.tasks import create_task
    from hydranet.train.report import write_metrics_report

    tasks = {"drivable": create_task("drivable")}
    results = {"drivable": {"miou": 0.9}}
    summary = {"steps": 3, "skipped_steps": 0}
    meta = {"eval_frames": 2, "device": "cpu", "threads": 1, "global_batch": 2,
            "seconds": {"train": 0.01, "train_reused_run": 5.2}, "temporal": True}
    md, _ = write_metrics_report(tmp_path, results, None, tasks, summary, meta)
    text = md.read_text()
    assert "(5 s of training in an earlier run, reused on cpu" in text
    assert "memory reset at every frame" in text and "video.json" in text
    meta = {**meta, "seconds": {"train": 7.4}, "temporal": False}
    text = write_metrics_report(tmp_path, results, None, tasks, summary, meta)[0].read_text()
    assert "(7 s of training on cpu" in text and "memory" not in text


def test_the_install_counts_only_when_it_finished_just_before_the_demo(tmp_path, monkeypatch):
    """Before: every demo run reported the venv's install seconds, though only the first one installed anything."""
    import os
    import time

    from hydranet.train import demo

    (tmp_path / "install_seconds").write_text("56\n")
    monkeypatch.setattr(demo.sys, "prefix", str(tmp_path))
    assert demo._install_seconds() == 56.0
    old = time.time() - 3600
    os.utime(tmp_path / "install_seconds", (old, old))
    assert demo._install_seconds() is None
