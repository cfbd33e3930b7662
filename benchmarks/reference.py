"""The reference model's held-out figures and the floors `make test` checks it against. Prints one JSON object.

The zoo model (default ``zoo:tiny-world``) is evaluated per condition (day, night, fog, dense traffic: the
``CONDITIONS`` below) on worlds it never saw: the **test seed** of each condition is the world whose frames
``make test`` evaluates (``suites/reference/<condition>.yaml``): the first seed from the condition's own whose
frames hold ``MIN_LIGHTS_PER_STATE`` labelled lights of every state, so the light floors judge every state. The
next ``--noise-seeds`` seeds are the same condition drawn again. From them, per task metric and condition:

- ``value``: the metric on the test seed's frames (what CI recomputes);
- ``std``: the seed noise -- the standard deviation of the metric over the noise seeds, each on as many
  frames as the test (how much the number moves when the frames are drawn again: what a harmless change
  to the world or the evaluation can do to a test that reads fixed frames);
- ``mean``: the metric over the test and noise seeds together (the README's held-out figure, on
  ``frames x (1 + noise_seeds)`` frames);
- ``floor``: ``mean - SIGMAS * std`` (``+`` for error metrics such as depth AbsRel and mATE), never above
  ``value - max(MARGIN, std)`` so the recorded frames pass with room for arithmetic differences between
  machines, even when the test seed is itself far from the mean. A harmless redraw of the frames falls
  below it with probability ~0.1 % (one-sided 3 sigma); a floor at or below 0 cannot fail and is left out
  (``floor: null``).

``tools/zoo_install.py floors`` writes the suites from this JSON (``docs/results/reference.json``).

    .venv/bin/python benchmarks/reference.py [--model zoo:tiny-world] [--frames 12] [--noise-seeds 8]

Then it shows the floors catch damage to the trained network: each of ``DAMAGES`` breaks one real part at run
time (a geometry sign, a fusion height, a decoder offset, a normalisation constant) on a copy of the model,
which is evaluated on the ``DAMAGE_CONDITION`` test frames against the floors just derived; the JSON records
every floor each damage trips (``tests/zoo/`` asserts the same on every ``make test``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hydranet.checkpoint import load_model
from hydranet.data.sample import LIGHT_STATES
from hydranet.eval.runner import SuiteRun, Worlds, check_thresholds, plan_frames, run_suite
from hydranet.eval.suite import Suite, lower_is_better
from hydranet.json_files import dumps

# Each condition: a one-scenario suite. ``seed``: where the search for its test world starts (never rendered by
# the reference or the demo config: those train on seeds 2 and 1, evaluate on 1001; the shipped suites use
# 9000-9302). Frames are spread over the scenes, one frame per scene. Intersections and every light phase are
# drawn often, as in the demo's held-out world: with the world's default mix 12 frames held 2-4 lights of a single
# state, so the light floors judged one state's recall on a handful of lights.
WORLD = {"num_scenes": 24, "frames_per_scene": 4,
         "layout_weights": {"straight": 0.2, "curve": 0.2, "intersection": 0.6},
         "signal_weights": {"go": 0.3, "stop": 0.2, "wait": 0.1, "yellow": 0.4}}
# The test world of a condition is the first seed from its ``seed`` whose test frames hold at least this many
# labelled lights of every state, so its light floors judge red, yellow and green alike.
MIN_LIGHTS_PER_STATE = 3
CONDITIONS: dict[str, dict[str, Any]] = {
    "day": {"description": "clear daylight, every road layout", "seed": 9500,
            "world": {"lighting": "day", "fog": 0.0}},
    "night": {"description": "night, clear, street lamps and distant city lights", "seed": 9520,
              "world": {"lighting": "night", "fog": 0.0}},
    "fog": {"description": "daylight in fog (extinction 0.02 per metre)", "seed": 9540,
            "world": {"lighting": "day", "fog": 0.02}},
    "dense_traffic": {"description": "dense traffic with trucks and crowded sidewalks, daylight", "seed": 9560,
                      "world": {"lighting": "day", "fog": 0.0, "traffic_density": 3.0, "truck_fraction": 0.35,
                                "pedestrian_density": 3.0}},
}
# The metrics that get a floor: each task's headline, plus AP50 for 2D boxes (COCO mAP of 3-10 px boxes at
# 96x192 is small), boundary IoU for drivable space (the edges a geometry error moves first), for 3D boxes
# the AP at the 2 m match distance and mATE (the translation error of matched boxes): on 12 frames the mAP's
# seed noise is large, while a box decoded metres off moves these two far beyond theirs; and the lights'
# precision: balanced accuracy and recall count only the lights that are there, so a light called where there
# is none (a road without signals) lowers nothing else.
FLOOR_METRICS: dict[str, tuple[str, ...]] = {
    "drivable": ("miou", "boundary_iou"), "lanes": ("f1",), "depth": ("abs_rel",), "bev_semantic": ("miou",),
    "detection2d": ("map", "ap50"), "objects3d": ("map", "ap@2m", "ate"),
    "traffic_light": ("balanced_accuracy", "precision"),
}
# Reported (README), not floored: per-range 3D mAP, per-class figures.
REPORTED: dict[str, tuple[str, ...]] = {
    "objects3d": ("map@0-15m", "map@15-30m", "map@30m+", "ap/car", "ap/pedestrian"),
    "traffic_light": ("recall/red", "recall/green"), "detection2d": ("ap/car",), "depth": ("delta1",),
}
SIGMAS = 3.0
MARGIN = 0.01
BEV_TASKS = ("bev_semantic", "objects3d")


@dataclass(frozen=True)
class Damage:
    """A deliberate fault in a trained network: ``apply(model)`` breaks a deep copy in place, at run time (the
    weights stay untouched). ``affects``: the tasks whose outputs it changes (``None``: every task); the
    others must stay bit-identical and keep passing."""

    name: str
    what: str
    affects: tuple[str, ...] | None
    apply: Callable[[torch.nn.Module], None]


_FLIP_Y = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0]))


def _extrinsics_y_sign(model: torch.nn.Module) -> None:
    # The camera->BEV projection gets T_ego_from_cam with the ego y axis negated: a sign error in the
    # extrinsics convention (y left), which mirrors every camera to the other side of the car.
    sampler = model.fusion.sampler
    lift = sampler.forward
    sampler.forward = lambda feats, K, T, *args, **kw: lift(feats, K, _FLIP_Y.to(T) @ T, *args, **kw)


def _fusion_heights(dz: float) -> Callable[[torch.nn.Module], None]:
    def apply(model: torch.nn.Module) -> None:
        model.fusion.sampler.points[:, 2] += dz  # every reference point's ego z, as if the heights were off
    return apply


def _decoder_reads(task: str, output: str, shift: float) -> Callable[[torch.nn.Module], None]:
    def apply(model: torch.nn.Module) -> None:
        # The task's decoder reads one head output shifted by a constant: ``offset`` + 1 puts every decoded
        # position a cell off; ``heatmap`` + 3 raises every logit (a score calibration or threshold gone wrong),
        # so objects are reported wherever a peak clears the score threshold, there or not.
        t = model.task_objects[task]
        decode = t.decode
        t.decode = lambda outputs, batch: decode({**outputs, output: outputs[output] + shift}, batch)
    return apply


def _pixel_std(scale: float) -> Callable[[torch.nn.Module], None]:
    def apply(model: torch.nn.Module) -> None:
        model._inv_std = model._inv_std / scale  # the normalisation's PIXEL_STD constant multiplied by `scale`
    return apply


def _channel_order(model: torch.nn.Module) -> None:
    normalize = model.normalize
    model.normalize = lambda images: normalize(images.flip(-3))  # RGB images read as BGR


DAMAGES: tuple[Damage, ...] = (
    Damage("extrinsics_y_sign", "T_ego_from_cam's y axis flipped in the camera-to-BEV projection", BEV_TASKS,
           _extrinsics_y_sign),
    Damage("fusion_heights", "every fusion reference height 0.5 m too high", BEV_TASKS, _fusion_heights(0.5)),
    Damage("objects3d_offset", "decoded 3D centres 2 BEV cells off in x and in y (2.8 m)", ("objects3d",),
           _decoder_reads("objects3d", "offset", 2.0)),
    Damage("detection2d_offset", "decoded 2D boxes 1 output cell off (x and y)", ("detection2d",),
           _decoder_reads("detection2d", "offset", 1.0)),
    Damage("traffic_light_hallucinations", "every traffic-light heatmap logit raised by 3 (lights called where there "
           "are none)", ("traffic_light",), _decoder_reads("traffic_light", "heatmap", 3.0)),
    Damage("pixel_std", "the normalisation constant PIXEL_STD doubled", None, _pixel_std(2.0)),
    Damage("channel_order", "images fed in BGR instead of RGB order", None, _channel_order),
)
DAMAGE_CONDITION = "day"


def damaged(model: torch.nn.Module, damage: Damage) -> torch.nn.Module:
    """A deep copy of ``model`` (eval mode) with ``damage`` applied."""
    copy_ = copy.deepcopy(model).eval()
    damage.apply(copy_)
    return copy_


def condition_suite(name: str, frames: int, noise_seeds: int, first_seed: int | None = None) -> Suite:
    """The suite of condition ``name`` over its test seed (default: where the condition's search starts) and the
    ``noise_seeds`` seeds after it."""
    c = CONDITIONS[name]
    first = c["seed"] if first_seed is None else first_seed
    return Suite(name=name, description=c["description"], world=dict(WORLD), scenarios={name: dict(c["world"])},
                 seeds=(first, first + 1 + noise_seeds), frames=frames, tasks={t: {} for t in FLOOR_METRICS})


def light_counts(model: torch.nn.Module, suite: Suite, seed: int) -> dict[str, int]:
    """Labelled traffic lights per state on the frames ``suite`` evaluates of world ``seed`` (labels only: the
    frames are rendered, no model runs)."""
    one = suite.model_copy(update={"seeds": (seed, seed + 1)})
    worlds = Worlds(one, {"reference": model})
    counts = dict.fromkeys(LIGHT_STATES, 0)
    for frame in plan_frames(one, lambda scenario, s: len(worlds(scenario, s))):
        lights = worlds.sample(frame).labels.get("traffic_light")
        for state in ([] if lights is None else lights["state"].tolist()):
            counts[LIGHT_STATES[state]] += 1
    return counts


def pick_test_seed(model: torch.nn.Module, name: str, frames: int, tries: int = 40) -> tuple[int, dict[str, int]]:
    """The first seed from condition ``name``'s ``seed`` whose test frames hold ``MIN_LIGHTS_PER_STATE`` lights of
    every state, with its counts; ``RuntimeError`` when none of ``tries`` seeds does."""
    suite = condition_suite(name, frames, 0)
    for seed in range(CONDITIONS[name]["seed"], CONDITIONS[name]["seed"] + tries):
        counts = light_counts(model, suite, seed)
        if min(counts.values()) >= MIN_LIGHTS_PER_STATE:
            return seed, counts
    raise RuntimeError(f"{name}: no seed of {tries} holds {MIN_LIGHTS_PER_STATE} lights of every state in {frames} "
                       "frames")


def floor_of(metric: str, value: float, mean: float, std: float) -> float | None:
    """``mean -/+ SIGMAS * std``, no closer to ``value`` than ``MARGIN`` or one ``std`` (a test seed that is itself
    far out keeps a seed std of room for another machine's arithmetic); None when it could never fail."""
    room = max(MARGIN, std)
    if lower_is_better(metric):
        bound = max(mean + SIGMAS * std, value + room)
        return None if not math.isfinite(bound) else math.ceil(bound * 1000) / 1000
    bound = min(mean - SIGMAS * std, value - room)
    bound = math.floor(bound * 1000) / 1000
    return bound if bound > 0 and math.isfinite(bound) else None


def measure(model: torch.nn.Module, name: str, frames: int, noise_seeds: int) -> dict[str, Any]:
    """One condition: per task and metric the test-seed value, the seed noise, the mean and the floor; and
    ``suite``, the floors suite of the test seed (``tools/zoo_install.py floors`` writes it as YAML)."""
    first, lights = pick_test_seed(model, name, frames)
    suite = condition_suite(name, frames, noise_seeds, first)
    run = run_suite({"reference": model}, suite, batch_size=4)["reference"]
    out: dict[str, Any] = {"description": suite.description, "world": {**WORLD, **CONDITIONS[name]["world"]},
                           "seed": first, "frames": frames, "noise_seeds": [first + 1, suite.seeds[1] - 1],
                           "lights": lights, "seconds": round(run.seconds, 1), "tasks": {}}
    thresholds: dict[str, dict[str, str]] = {}
    for task, te in run.tasks.items():
        by_seed: dict[int, list[int]] = {}
        for record, frame in enumerate(te.frames):
            by_seed.setdefault(run.frames[frame].seed, []).append(record)
        per_seed = {seed: te.metric.compute_frames(records) for seed, records in sorted(by_seed.items())}
        rows: dict[str, Any] = {}
        for metric in FLOOR_METRICS[task] + REPORTED.get(task, ()):
            values = [float(per_seed[s].get(metric, math.nan)) for s in per_seed]
            value = float(per_seed.get(first, {}).get(metric, math.nan))
            noise = [v for s, v in zip(per_seed, values, strict=True) if s != first and math.isfinite(v)]
            std = float(np.std(noise, ddof=1)) if len(noise) >= 2 else math.nan
            mean = float(te.metrics.get(metric, math.nan))
            row = {"value": value, "mean": mean, "std": std, "per_seed": values,
                   "frames": {"test": len(by_seed.get(first, [])), "all": len(te.frames)}}
            if metric in FLOOR_METRICS[task]:
                floored = math.isfinite(value) and math.isfinite(std)
                row["tolerance"] = SIGMAS * std if math.isfinite(std) else None
                row["floor"] = floor_of(metric, value, mean, std) if floored else None
                row["op"] = "<=" if lower_is_better(metric) else ">="
                if row["floor"] is not None:
                    thresholds.setdefault(task, {})[metric] = f"{row['op']} {row['floor']:.3f}"
            rows[metric] = row
        out["tasks"][task] = rows
    out["suite"] = {"name": name, "description": f"reference model floors: {suite.description}",
                    "world": out["world"], "scenarios": {name: {}}, "seeds": [first, first + 1],
                    "frames": frames, "tasks": {t: {"thresholds": thresholds.get(t, {})} for t in FLOOR_METRICS}}
    return out


def _text(value: float) -> str:
    """A metric for the docs: 3 decimals, or "undefined" (NaN: e.g. mATE when no box matched)."""
    return f"{value:.3f}" if math.isfinite(value) else "undefined"


def trips(run: SuiteRun, base: SuiteRun | None = None) -> dict[str, Any]:
    """What a (damaged) model's run does to the floors: every check (value, floor, status), the failed ones,
    and ``summary``, one line for the docs: each failed floor with the undamaged value (from ``base``)."""
    checks = check_thresholds(run)
    failed = [c for c in checks if c.status == "fail"]
    before = {(c.task, c.metric): c.value for c in check_thresholds(base)} if base is not None else {}
    parts = [f"`{c.task}.{c.metric}` {_text(before.get((c.task, c.metric), math.nan))} → **{_text(c.value)}** "
             f"(floor {c.threshold})" for c in failed]
    passed = len(checks) - len(failed)
    return {"failed": [f"{c.task}.{c.metric}" for c in failed], "passed": passed,
            "summary": "; ".join(parts) + f"; the other {passed} floors pass" if parts else f"all {passed} floors pass",
            "checks": {f"{c.task}.{c.metric}": {"value": c.value, "floor": c.threshold, "status": c.status}
                       for c in checks}}


def measure_damages(model: torch.nn.Module, suite_data: dict[str, Any]) -> dict[str, Any]:
    """Every ``DAMAGES`` entry on the floors suite's frames (one pass: the frames are rendered once)."""
    suite = Suite.model_validate(suite_data)
    models = {"reference": model, **{d.name: damaged(model, d) for d in DAMAGES}}
    runs = run_suite(models, suite, batch_size=4)
    out = {"condition": suite.name, "frames": len(runs["reference"].frames),
           "seconds": round(runs["reference"].seconds, 1), "reference": trips(runs["reference"]), "damages": {}}
    for d in DAMAGES:
        out["damages"][d.name] = {"what": d.what, "affects": list(d.affects) if d.affects else "every task",
                                  **trips(runs[d.name], runs["reference"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:tiny-world", help="checkpoint, run directory or zoo:NAME")
    ap.add_argument("--frames", type=int, default=12, help="frames per condition and seed (the CI test's size)")
    ap.add_argument("--noise-seeds", type=int, default=8, help="further seeds per condition: the seed noise")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated subset of the conditions")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the numbers make test recomputes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, ckpt = load_model(args.model)
    provenance_file = ckpt.path / "provenance.json"
    provenance = json.loads(provenance_file.read_text()) if provenance_file.is_file() else {}
    result: dict[str, Any] = {
        "model": args.model, "checkpoint": str(ckpt.path), "step": ckpt.state.get("step"),
        "sha256": provenance.get("sha256", {}).get("model.safetensors"), "provenance": provenance,
        "image_hw": list(model.setup.image_size), "frames": args.frames, "noise_seeds": args.noise_seeds,
        "sigmas": SIGMAS, "margin": MARGIN, "threads": args.threads,
        "floor_rule": f"mean - {SIGMAS:g} x seed std (error metrics: +), at most value - max({MARGIN:g}, seed std)",
        "conditions": {},
    }
    for name in [c.strip() for c in args.conditions.split(",") if c.strip()]:
        if name not in CONDITIONS:
            raise SystemExit(f"--conditions: unknown condition '{name}' (known: {', '.join(CONDITIONS)})")
        result["conditions"][name] = measure(model, name, args.frames, args.noise_seeds)
    result["floors"] = sum(len(t["thresholds"]) for cond in result["conditions"].values()
                           for t in cond["suite"]["tasks"].values())
    if DAMAGE_CONDITION in result["conditions"]:
        result["damage"] = measure_damages(model, result["conditions"][DAMAGE_CONDITION]["suite"])
    result["test_frames"] = args.frames * len(result["conditions"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(dumps(result))


if __name__ == "__main__":
    main()
