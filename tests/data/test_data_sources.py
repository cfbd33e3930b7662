"""The source registry, label specs, class maps, open_dataset for every kind, convert and resize."""

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from hydranet.data import SOURCES, Source, SourceConfigError, SourceOptions, open_source, register_source
from hydranet.data.convert import convert, resize_sample
from hydranet.data.labels import LABEL_SPECS, ClassMap, LabelSpec, label_spec
from hydranet.data.sample import Sample, collate
from hydranet.datasets import open_dataset
from hydranet.tasks.base import TASKS, register_task
from hydranet.tasks.depth import Depth
from hydranet.train.config import ConfigError, config_from_dict

WORLD = {"num_scenes": 1, "frames_per_scene": 2, "setup": {"image_size": [32, 64]}}


def test_world_and_shards_registered_and_open(tmp_path):
    assert {"world", "shards", "nuscenes"} <= set(SOURCES)
    world = open_dataset({"kind": "world", "frames": 2, "world": WORLD})
    assert len(world) == 2 and world.camera_names[0] == "main"
    manifest, report = convert(world, tmp_path / "w", image_format="png")
    assert report["samples"] == 2 and manifest.source["kind"] == "world"
    shards = open_dataset({"kind": "shards", "path": str(tmp_path / "w")})
    a, b = world[1], shards[1]
    assert torch.equal(a.images, b.images) and torch.equal(a.labels["depth"], b.labels["depth"])
    assert len(open_dataset(f"shards:{tmp_path / 'w'}")) == 2
    # Shards keep the classes they were written with: a class map would be accepted and not applied.
    with pytest.raises(SourceConfigError, match=r"shards\.class_map: shards are read with the classes they were"):
        open_source({"kind": "shards", "path": str(tmp_path / "w"), "class_map": {"truck": "car"}})
    with pytest.raises(SourceConfigError, match=r"shards\.pth: unknown field"):
        open_source({"kind": "shards", "pth": "x"}, "shards")


def test_training_config_validates_source_options():
    base = {"model": {"preset": "tiny"}}
    with pytest.raises(ConfigError, match=r"data\.datasets\.n: source 'nuscenes': bad options \(versoin: unknown"):
        config_from_dict({"data": {"datasets": {"n": {"kind": "nuscenes", "dataroot": "x", "versoin": 1}}}, **base})
    with pytest.raises(ConfigError, match="unknown source 'kitty'"):
        config_from_dict({"data": {"datasets": {"k": {"kind": "kitty"}}}, **base})
    cfg = config_from_dict({"data": {"datasets": {"n": {"kind": "nuscenes", "dataroot": "x", "split": "mini_val"}}},
                            **base})
    assert cfg.data.datasets["n"].options() == {"kind": "nuscenes", "dataroot": "x", "split": "mini_val"}


def test_a_new_label_needs_only_its_task(tmp_path):
    """A task declaring a new label: Sample.validate, collate and the shard codec handle it unchanged."""
    spec = LabelSpec("radar_hits", "ragged", "points [M, 3]", "float32", "radar returns", fields=("points",))

    class RadarTask(Depth):
        name = "radar_test"
        label = "radar_hits"
        label_spec = spec

    try:
        register_task(RadarTask)
        assert label_spec("radar_hits").task == "radar_test"
        s = open_dataset({"kind": "world", "frames": 1, "world": WORLD})[0]
        s.labels = {"radar_hits": {"points": torch.ones(4, 3)}}
        s.validate()
        batch = collate([s, s])
        assert isinstance(batch.labels["radar_hits"], list)
        from hydranet.data.shards import ShardDataset, ShardWriter

        with ShardWriter(tmp_path / "r") as w:
            w.write(s)
        back = ShardDataset(tmp_path / "r")[0]
        assert torch.equal(back.labels["radar_hits"]["points"], torch.ones(4, 3))
        s.labels = {"radar_hits": {"pts": torch.ones(4, 3)}}
        with pytest.raises(ValueError, match=r"lacks field\(s\) \['points'\]"):
            s.validate()
    finally:
        TASKS.pop("radar_test", None)
        LABEL_SPECS.pop("radar_hits", None)
    s.labels = {"nonsense": torch.zeros(1)}
    with pytest.raises(ValueError, match="unknown label 'nonsense'"):
        s.validate()


def test_a_task_label_must_be_declared():
    class Typo(Depth):
        name = "typo_test"
        label = "dpeth"

    with pytest.raises(ValueError, match="task 'typo_test' learns from label 'dpeth', which is not declared"):
        register_task(Typo)
    TASKS.pop("typo_test", None)


def test_the_data_layer_knows_every_builtin_label_without_model_code():
    """The label registry is data's: a reader that never imports hydranet.tasks (the world, a shard
    reader) still validates, collates and decodes every built-in label."""
    code = ("import sys; from hydranet.data.labels import task_labels, label_spec; "
            "from hydranet.world.dataset import SyntheticWorld; "
            "s = SyntheticWorld(num_scenes=1, frames_per_scene=1, setup={'image_size': (32, 64)})[0]; "
            "assert 'hydranet.tasks' not in sys.modules and 'hydranet.model' not in sys.modules, sorted(sys.modules); "
            "print(','.join(task_labels()), label_spec('objects3d').task, ','.join(sorted(s.labels)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}).stdout.split()
    assert out[0] == "bev_semantic,depth,detection2d,drivable,lanes,objects3d,traffic_light"
    assert out[1] == "objects3d"
    assert set(out[0].split(",")) <= set(out[2].split(","))


def test_class_map_drops_and_counts():
    cm = ClassMap({"car": "car", "van": "car", "barrier": None}, ("car", "truck"))
    assert [cm(n) for n in ("car", "van", "barrier", "tram", "tram")] == [0, 0, None, None, None]
    # what each kept dataset class became (before: the report named only the dataset's classes, so a
    # `--class-map '{car: truck}'` conversion read as if it still held cars)
    assert cm.report() == {"kept": {"car": 1, "van": 1}, "dropped": {"barrier": 1, "tram": 2},
                           "model_class": {"car": "car", "van": "car"}}
    with pytest.raises(ValueError, match=r"class_map\.van: 'lorry' is not a model class"):
        ClassMap({"van": "lorry"}, ("car",))


def test_plugin_source_registers_and_declares(tmp_path):
    class OneOptions(SourceOptions):
        value: int = 3

    @register_source("one_cam_test")
    class OneCam(Source):
        Options = OneOptions
        labels = frozenset({"depth"})
        classes: ClassVar[dict] = {}

        def __init__(self, options, setup=None):
            super().__init__(options, setup)
            self.camera_names = ("front",)

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return Sample(images=torch.full((1, 3, 16, 32), i, dtype=torch.uint8), intrinsics=torch.eye(3)[None],
                          T_ego_from_cam=torch.eye(4)[None], T_world_from_ego=torch.eye(4), timestamp=0.1 * i,
                          scene_id="s", camera_names=self.camera_names, frame_index=i,
                          labels={"depth": torch.full((1, 16, 32), float(self.options.value))})

    try:
        ds = open_dataset({"kind": "one_cam_test", "value": 5})
        assert ds[1].labels["depth"].max() == 5
        assert ds.describe()["camera_names"] == ["front"]
        with pytest.raises(SourceConfigError, match=r"one_cam_test\.value: Input should be a valid integer"):
            open_source({"kind": "one_cam_test", "value": "x"}, "one_cam_test")
    finally:
        SOURCES.pop("one_cam_test")


def test_resize_rescales_k_boxes_and_keeps_sparse_depth():
    s = open_dataset({"kind": "world", "frames": 1, "world": WORLD})[0]
    depth = torch.zeros_like(s.labels["depth"])
    depth[0, 10, 20] = 7.0
    depth[0, 11, 21] = 5.0  # same output pixel at half size: the nearer return wins
    s.labels = {"depth": depth, "detection2d": {"boxes": torch.tensor([[8.0, 4.0, 16.0, 12.0]]),
                                                "classes": torch.tensor([0]), "camera": torch.tensor([0])},
                "drivable": torch.ones(len(s.camera_names), 32, 64, dtype=torch.uint8)}
    r = resize_sample(s, (16, 32))
    assert r.images.shape[-2:] == (16, 32)
    torch.testing.assert_close(r.intrinsics[:, 0], s.intrinsics[:, 0] * torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(r.labels["detection2d"]["boxes"], torch.tensor([[4.0, 2.0, 8.0, 6.0]]))
    assert r.labels["depth"][0, 5, 10] == 5.0 and int((r.labels["depth"] > 0).sum()) == 1
    assert r.labels["drivable"].shape == (len(s.camera_names), 16, 32) and r.labels["drivable"].all()


def test_label_format_png_per_label(tmp_path):
    world = open_dataset({"kind": "world", "frames": 1, "world": WORLD})
    convert(world, tmp_path / "p", image_format="jpeg", label_formats={"drivable": "png", "lanes": "png"})
    from hydranet.data.shards import ShardDataset

    ds = ShardDataset(tmp_path / "p")
    members = ds.read_members(0)[2]
    assert "drivable.png" in members and "lanes.png" in members and "depth.npz" in members
    assert any(k.endswith(".jpg") for k in members)
    a, b = world[0], ds[0]
    assert torch.equal(a.labels["drivable"], b.labels["drivable"]) and torch.equal(a.labels["lanes"], b.labels["lanes"])
    with pytest.raises(Exception, match="only uint8 maps can be PNG"):
        convert(world, tmp_path / "q", label_formats={"depth": "png"})


def test_sixteen_bit_grey_images_keep_their_top_byte_and_float_images_are_refused(tmp_path):
    """Before: PIL's convert("RGB") clamped 16-bit data, so a normally exposed 16-bit frame came out white."""
    import numpy as np
    import pytest
    from PIL import Image

    from hydranet.data.sources import SourceError
    from hydranet.data.sources.imaging import load_rgb

    grey = np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (8, 1))  # 8 x 256, every 8-bit level once
    Image.fromarray(grey).save(tmp_path / "g16.png")
    image, size = load_rgb(tmp_path / "g16.png")
    assert size == (8, 256) and image.shape == (3, 8, 256)
    assert image[0, 0].tolist() == list(range(256)) and bool((image[0] == image[2]).all())
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(SourceError, match=r"f.tiff: a floating-point image"):
        load_rgb(tmp_path / "f.tiff")
