"""The ``world`` source: its length, its class map (applied to both object labels and counted, as every source's)
and the model's setup flowing into a world given as a YAML path."""

import json

import pytest
import torch

from hydranet.data import SourceConfigError, open_source
from hydranet.data.convert import convert
from hydranet.data.shards import ShardDataset
from hydranet.datasets import open_dataset, source_config
from hydranet.setup import NUSCENES_CLASSES, OBJECT_CLASSES, Setup

# A busy intersection: every frame has cars, trucks and pedestrians in view.
WORLD = {"seed": 5, "num_scenes": 1, "frames_per_scene": 2, "traffic_density": 2.0, "layout": "intersection",
         "setup": {"image_size": [32, 64]}}
CAR, TRUCK, PEDESTRIAN = (OBJECT_CLASSES.index(c) for c in ("car", "truck", "pedestrian"))


def world(**options):
    return open_source({"kind": "world", "world": WORLD, **options})


def test_without_frames_a_world_is_its_own_length():
    assert len(world()) == 2  # num_scenes x frames_per_scene
    assert len(world(frames=5)) == 6  # whole scenes added to cover the frames asked for
    assert len(open_dataset({"kind": "world", "world": WORLD, "frames": 1})) == 1  # the first frames only


def test_the_class_map_relabels_drops_and_counts_both_object_labels():
    plain = world()
    mapped = world(class_map={"truck": "car", "pedestrian": None})
    expected = {"kept": {}, "dropped": {}}
    for i in range(2):
        a, b = plain[i].labels, mapped[i].labels
        for label in ("objects3d", "detection2d"):
            classes = a[label]["classes"]
            keep = classes != PEDESTRIAN
            assert {TRUCK, PEDESTRIAN} <= set(classes.tolist())  # the frame has what the map changes
            assert torch.equal(b[label]["classes"], torch.where(classes == TRUCK, CAR, classes)[keep])
            for field, value in a[label].items():
                if field != "classes":
                    assert torch.equal(b[label][field], value[keep]), (label, field)
            for c in classes.tolist():
                group = "dropped" if c == PEDESTRIAN else "kept"
                expected[group][OBJECT_CLASSES[c]] = expected[group].get(OBJECT_CLASSES[c], 0) + 1
        assert torch.equal(a["depth"], b["depth"])  # other labels untouched
    report = mapped.class_map.report()
    assert report["kept"] == dict(sorted(expected["kept"].items()))
    assert report["dropped"] == {"pedestrian": expected["dropped"]["pedestrian"]}
    assert report["model_class"]["truck"] == "car" and report["model_class"]["car"] == "car"
    assert mapped.setup.vocabulary("objects3d") == OBJECT_CLASSES  # mapped onto the world's own vocabulary


def test_a_converted_world_holds_the_mapped_classes_and_reports_them(tmp_path):
    source = world(class_map={"truck": "car", "pedestrian": None})
    _, report = convert(source, tmp_path / "s", image_format="png")
    assert report["class_map"]["dropped"]["pedestrian"] > 0 and report["class_map"]["model_class"]["truck"] == "car"
    shards = ShardDataset(tmp_path / "s")
    for i in range(len(shards)):
        for label in ("objects3d", "detection2d"):
            assert not {TRUCK, PEDESTRIAN} & set(shards[i].labels[label]["classes"].tolist())


def test_model_classes_give_the_vocabulary_the_world_is_mapped_onto():
    source = world(model_classes=["pedestrian", "car"])
    assert source.setup.vocabulary("detection2d") == ("pedestrian", "car")
    for label in ("objects3d", "detection2d"):
        assert set(source[0].labels[label]["classes"].tolist()) == {0, 1}
    assert {"truck", "cone"} & set(source.class_map.report()["dropped"])  # not in the vocabulary: counted


def test_a_class_map_key_must_be_a_class_of_the_world():
    with pytest.raises(SourceConfigError, match=r"world\.class_map: \['trukc'\] are not classes of this dataset "
                                                r"\(its classes: \['car', 'cone', 'pedestrian', 'traffic_light', "
                                                r"'truck'\]\)"):
        world(class_map={"trukc": "car"})
    with pytest.raises(SourceConfigError, match=r"world\.class_map\.truck: 'bicycle' is not a model class"):
        world(class_map={"truck": "bicycle"})
    # A world rendering nuScenes' vocabulary has its names: "cone" is "traffic_cone" there.
    nusc = {**WORLD, "setup": {**WORLD["setup"], "classes": {"objects3d": "nuscenes", "detection2d": "nuscenes"}}}
    with pytest.raises(SourceConfigError, match=r"\['cone'\] are not classes of this dataset .*'traffic_cone'"):
        open_source({"kind": "world", "world": nusc, "class_map": {"cone": None}})
    bus = open_source({"kind": "world", "world": nusc, "class_map": {"bus": "truck"}})
    assert bus.setup.vocabulary("objects3d") == NUSCENES_CLASSES and bus.class_map.mapping["bus"] == 1


def test_a_world_yaml_renders_the_setup_it_is_opened_for_unless_it_declares_one(tmp_path):
    bare, own = tmp_path / "bare.yaml", tmp_path / "own.yaml"
    bare.write_text(json.dumps({k: v for k, v in WORLD.items() if k != "setup"}))
    own.write_text(json.dumps(WORLD))
    model = Setup(image_size=(48, 96))
    assert source_config({"kind": "world", "world": str(bare)}, model)["world"]["setup"]["image_size"] == [48, 96]
    assert source_config({"kind": "world", "world": str(own)}, model)["world"] == str(own)
    assert open_dataset(f"world:{bare}", setup=model)[0].images.shape[-2:] == (48, 96)
    assert open_dataset(f"world:{own}", setup=model)[0].images.shape[-2:] == (32, 64)
