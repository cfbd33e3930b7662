"""benchmarks/quality.py judges a run against the demo's goals (issue 20's table) from the metrics it reads."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("hydranet_quality_benchmark", ROOT / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)


def _results(yellow: float) -> dict[str, dict[str, float]]:
    return {"detection2d": {"map": 0.41}, "objects3d": {"map": 0.49},
            "traffic_light": {"balanced_accuracy": 0.91, "recall/red": 0.96, "recall/yellow": yellow,
                              "recall/green": 0.97},
            "drivable": {"miou": 0.975}, "lanes": {"f1": 0.949}, "bev_semantic": {"miou": 0.56},
            "depth": {"abs_rel": 0.12}}


def test_headline_carries_every_light_goal():
    head = quality.headline(_results(yellow=0.5))
    assert head["traffic_light/red_recall"] == pytest.approx(0.96)
    assert head["traffic_light/yellow_recall"] == pytest.approx(0.5)
    assert set(quality.GOALS) <= set(head)


def test_goals_are_judged_on_their_own_side():
    status = quality.goal_status(quality.headline(_results(yellow=0.5)))
    met = {k: v["met"] for k, v in status.items()}
    assert met == {"detection2d": True, "objects3d": False, "traffic_light": True, "traffic_light/red_recall": True,
                   "traffic_light/yellow_recall": False, "drivable": True, "lanes": False, "bev_semantic": True,
                   "depth": True}  # depth: lower is better, 0.12 meets "<= 0.12"


def test_a_light_state_without_ground_truth_is_not_met():
    status = quality.goal_status(quality.headline(_results(yellow=float("nan"))))
    assert status["traffic_light/yellow_recall"]["met"] is False


def test_eval_frames_resize_the_held_out_world_keeping_its_frames_per_scene():
    demo = ROOT / "configs" / "demo.yaml"
    assert quality.eval_overrides(demo, [], None) == []  # the config's own held-out set
    per_scene = quality.load_config(demo, []).data.eval.world["frames_per_scene"]
    frames = 5 * per_scene + 1
    assert quality.eval_overrides(demo, [], frames) == [
        f"data.eval.frames={frames}", "data.eval.world.num_scenes=6", f"eval.frames={frames}"]
    assert quality.eval_overrides(demo, ["data.eval.world.frames_per_scene=1"], 7)[1] == "data.eval.world.num_scenes=7"


def test_a_trained_checkpoint_is_scored_as_one_point_at_its_step(tmp_path):
    args = quality.argparse.Namespace(checkpoint="zoo:tiny-world", config=ROOT / "configs" / "demo.yaml",
                                      set=["train.threads=1"], eval_frames=4, data_dir=str(tmp_path), label="")
    result = quality.evaluate_checkpoint(args)
    (point,) = result["curve"]
    assert point["step"] == result["steps"] == 6000  # the reference model's step, from its state.json
    assert point["train_cpu_s"] is None  # not known from a checkpoint: no point on a CPU-seconds axis
    assert set(quality.GOALS) - {"traffic_light/yellow_recall"} <= set(point)
    assert point["drivable"] > 0.9 and point["lanes"] > 0.9  # a trained network, not an initialisation
    assert (tmp_path / "eval" / "manifest.json").is_file() and not (tmp_path / "demo").exists()  # held-out only


def test_a_checkpoint_of_another_setup_is_refused_naming_it(tmp_path):
    args = quality.argparse.Namespace(checkpoint="zoo:tiny-world", config=ROOT / "configs" / "demo.yaml",
                                      set=["model.setup.image_size=[64,128]"], eval_frames=4,
                                      data_dir=str(tmp_path), label="")
    with pytest.raises(SystemExit, match="zoo:tiny-world: its setup"):
        quality.evaluate_checkpoint(args)


def test_compare_takes_a_legend_label_and_names_an_unreadable_file(tmp_path, monkeypatch):
    """``--compare JSON=LABEL`` draws that run under LABEL (a recorded run's own label can outlive what it names);
    a missing file is one usage error naming it."""
    run = {"label": "as recorded", "curve": [{"step": 10, "train_cpu_s": 1.0, "objects3d": 0.2}]}
    (tmp_path / "a.json").write_text(json.dumps(run))
    drawn = []
    monkeypatch.setattr(quality, "plot", lambda results, path, x: drawn.extend(r["label"] for r in results))
    assert quality.main(["--plot-only", "--plot", str(tmp_path / "p.png"), "--compare",
                         f"{tmp_path / 'a.json'}=AdamW, 4,000 steps", str(tmp_path / "a.json")]) == 0
    assert drawn == ["AdamW, 4,000 steps", "as recorded"]
    with pytest.raises(SystemExit):
        quality.main(["--plot-only", "--plot", str(tmp_path / "p.png"), "--compare", str(tmp_path / "missing.json")])
