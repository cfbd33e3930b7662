"""``hydranet eval --data``: any dataset scored with every task's metric, partial labels reported, data that does not
fit the model refused before a frame is read."""

import json

import pytest
import torch
from typer.testing import CliRunner

from hydranet.checkpoint import load_model
from hydranet.cli import app
from hydranet.datasets import open_dataset
from hydranet.eval import evaluate_dataset
from hydranet.metrics.base import NO_GROUND_TRUTH
from hydranet.metrics.traffic_light import TrafficLightMetric
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


def test_data_on_another_grid_is_refused_only_for_tasks_whose_labels_lie_on_it(model):
    """3D boxes are in metres in the ego frame: objects3d is scored on data of any BEV grid (before: refused for
    data on 0.5 m cells, as every BEV task was); bev_semantic's map is rasterised on the grid: refused, named."""
    fine = model.setup.model_dump(mode="json") | {"grid": {"x_range": [-32, 32], "y_range": [-32, 32], "cell": 0.5}}
    data = open_dataset("synthetic", world=WORLD | {"setup": fine}, setup=model.setup)  # declares its own grid
    result = evaluate_dataset(model, data, tasks=["objects3d"], frames=1, source="--data x")
    assert result.labelled_frames == {"objects3d": 1} and list(result.metrics) == ["objects3d"]
    with pytest.raises(SetupMismatchError, match=r"--data x: BEV grid is .*cell 0\.5 m.*\(setup\.grid\): the labels "
                                                 r"of bev_semantic lie on the grid; leave them out \(--tasks\)"):
        evaluate_dataset(model, data, tasks=["objects3d", "bev_semantic"], frames=1, source="--data x")


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
    # per-camera results by the rig's camera names, as suites write them
    assert "ap/main" in record["metrics"]["detection2d"] and "ap/cam0" not in record["metrics"]["detection2d"]
    # every null in the JSON says why, and so does the console for the metrics it shows
    for task, metrics in record["metrics"].items():
        assert {k for k, v in metrics.items() if v is None} == set(record["undefined"][task])
    said = " ".join(res.output.split())
    for task, reasons in record["undefined"].items():
        shown = [k for k in list(record["metrics"][task])[:6] if k in reasons]
        if shown:
            line = said[said.index(f"—: {task} undefined on these frames: "):]
            assert all(k in line and reasons[k] in line for k in shown)
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
    """``Metric.undefined``: each NaN result with the metric's own reason; frames without a yellow light leave
    yellow's recall without ground truth, frames without lights leave every rate so."""
    metric = TrafficLightMetric()
    boxes = torch.tensor([[10.0, 10.0, 14.0, 20.0], [30.0, 10.0, 34.0, 20.0]])
    lights = {"boxes": boxes, "camera": torch.tensor([0, 0]), "state": torch.tensor([0, 2])}  # red, green
    metric.update([{**lights, "scores": torch.tensor([0.9, 0.9])}], [lights])
    results = metric.compute()
    undefined = metric.undefined(results)
    assert undefined == {"recall/yellow": NO_GROUND_TRUTH, "precision/yellow": NO_GROUND_TRUTH}
    assert results["recall/red"] == 1.0 and "recall/red" not in undefined
    empty = TrafficLightMetric()
    empty.update([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "camera": torch.zeros(0, dtype=torch.long),
                   "state": torch.zeros(0, dtype=torch.long)}],
                 [{"boxes": torch.zeros(0, 4), "camera": torch.zeros(0, dtype=torch.long),
                   "state": torch.zeros(0, dtype=torch.long)}])
    assert empty.undefined(empty.compute())["balanced_accuracy"] == NO_GROUND_TRUTH
