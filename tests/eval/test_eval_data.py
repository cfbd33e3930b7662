"""``hydranet eval --data``: any dataset scored with every task's metric, partial labels reported, data that does not
fit the model refused before a frame is read."""

import json

import pytest
from typer.testing import CliRunner

from hydranet.checkpoint import load_model
from hydranet.cli import app
from hydranet.cli.suites import _why_undefined
from hydranet.datasets import open_dataset
from hydranet.eval import evaluate_dataset
from hydranet.setup import SetupMismatchError

WORLD = {"seed": 5, "num_scenes": 2, "frames_per_scene": 2, "drop_labels": {"depth": 1.0}}


@pytest.fixture(scope="module")
def model():
    return load_model("zoo:tiny-world")[0]


def test_a_dataset_is_scored_per_task_on_the_frames_that_carry_its_label(model):
    data = open_dataset("synthetic", world=WORLD, setup=model.setup)  # rendered for the model's setup
    result = evaluate_dataset(model, data, frames=3, batch_size=2)
    assert result.frames == 3
    assert result.unlabelled == ["depth"] and "depth" not in result.metrics  # never a zero for missing labels
    assert result.labelled_frames["depth"] == 0 and result.labelled_frames["drivable"] == 3
    assert set(result.metrics) == set(model.task_objects) - {"depth"}
    assert 0.5 < result.metrics["drivable"]["miou"] <= 1.0  # the reference model on its own kind of frames
    assert list(result.metrics["objects3d"])[0] == "map"  # the headline first
    only = evaluate_dataset(model, data, tasks=["drivable"], frames=1)
    assert list(only.metrics) == ["drivable"]
    with pytest.raises(ValueError, match=r"tasks \['nope'\] are not heads"):
        evaluate_dataset(model, data, tasks=["nope"])


def test_data_that_does_not_fit_the_model_is_refused_naming_it(model):
    other = open_dataset("synthetic", world=WORLD)  # the world's default setup: 128x256, not the model's 96x192
    with pytest.raises(SetupMismatchError, match=r"--data x: images are 128x256 \(HxW\) but the model is built for "
                                                 r"96x192.*unless its file declares a `setup` of its own"):
        evaluate_dataset(model, other, frames=1, source="--data x")


def test_eval_data_command(tmp_path):
    runner = CliRunner()
    world = tmp_path / "world.yaml"
    world.write_text(json.dumps(WORLD))
    out = tmp_path / "e.json"
    res = runner.invoke(app, ["eval", "zoo:tiny-world", "--data", f"synthetic:{world}", "-n", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "not scored (no frame carries their label): depth" in " ".join(res.output.split())
    record = json.loads(out.read_text())
    assert record["frames"] == 2 and record["unlabelled"] == ["depth"] and "map" in record["metrics"]["objects3d"]
    lights = record["metrics"]["traffic_light"]
    if lights["balanced_accuracy"] is None or lights["balanced_accuracy"] != lights["balanced_accuracy"]:
        # an undefined metric says why, per task, not only what "—" means
        said = " ".join(res.output.split())
        assert "—: traffic_light balanced_accuracy" in said and "no traffic light whose lit lamp shows" in said
    tracked = runner.invoke(app, ["eval", "zoo:tiny-world", "--data", "synthetic", "--track"])
    assert tracked.exit_code == 2 and "--data scores single frames" in " ".join(tracked.output.split())
    loose = runner.invoke(app, ["eval", "zoo:tiny-world", "--data", "synthetic", "--allow-missing-tasks"])
    assert loose.exit_code == 2 and "applies to suites' thresholds" in loose.output
    # world:PATH needs no `frames` option (the world's own length; --frames/-n limits it) and renders the model's setup
    res = runner.invoke(app, ["eval", "zoo:tiny-world", "--data", f"world:{world}", "-n", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["frames"] == 1
    both = runner.invoke(app, ["eval", "zoo:tiny-world", "--data", "synthetic", "--suite", "suites"])
    assert both.exit_code == 2 and "--suite and --data exclude each other" in both.output
    missing = runner.invoke(app, ["eval", "zoo:tiny-world", "--data", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no such dataset" in missing.output and "Traceback" not in missing.output


def test_an_undefined_metric_says_why():
    assert "no traffic light" in _why_undefined({"balanced_accuracy": float("nan"), "lights/red": 0.0,
                                                 "lights/yellow": 0.0, "lights/green": 0.0})
    assert _why_undefined({"lights/red": 2.0, "lights/yellow": 0.0, "lights/green": 5.0}) == \
        "no yellow light in their labels"
    assert "class, type or range" in _why_undefined({"map": float("nan")})
