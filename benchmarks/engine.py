"""Does mining beat random selection at the same label budget?

On the synthetic world, per seed:

1. **base**: a HydraNet (the tiny preset, drivable + depth) trained for ``--base-steps``
   on ``--base-frames`` *daytime* frames only — so it is weak on the night suite.
2. An unlabelled pool of ``--pool-frames`` frames, ``--night-fraction`` of them at night (the weak
   condition is rare in what a fleet sends back), other world seeds, as shards: mining reads no
   labels and gets no lighting metadata — the night trigger reads the images.
3. With the same budget of ``--budget`` frames (default +10 % of the base set) from that pool, the
   base model is fine-tuned for ``--ft-steps`` on base + the chosen frames, for each selection:
   - ``none``: no new frames (the control: what the extra steps alone buy);
   - ``random``: frames drawn uniformly from the pool, oracle labels;
   - ``mined``: ``hydranet mine`` with ``--triggers`` (uncertainty + the user-named weak condition),
     oracle labels;
   - ``mined_uncertainty``: mined with the drivable-entropy trigger alone, oracle labels;
   - ``mined_auto``: the ``mined`` frames auto-labelled by a teacher over their whole clip (a
     model trained longer on more frames of every lighting, ``--teacher-*``; shared by all seeds).
4. Every model is evaluated on the same frames of a night suite and a day suite (drivable mIoU,
   depth AbsRel), and gated against ``base`` with ``hydranet.eval.gate`` (bootstrap, tolerances).

Gain = metric(method) − metric(base), oriented so positive is better. The goal:
mined gain ≥ 1.5 × random gain on the weak (night) suite's drivable mIoU, no suite regressing
beyond its gate. Results per seed are cached in ``--work`` (``seed_<n>.json``) so seeds can run
as separate commands; the last command prints the JSON over every seed done. A ``--work`` holds the results of
one set of settings (``settings.json``): other settings are refused there, never mixed in::

    python benchmarks/engine.py --seeds 0 --work /tmp/engine-bench   # ~4 min per seed on 2 busy cores
    python benchmarks/engine.py --seeds 0,1,2 --work /tmp/engine-bench

**From the reference model** (``--from zoo:tiny-world``): the base is the trained reference model itself
(all seven tasks, its 8-camera setup), fine-tuned as ``configs/engine/vacation.yaml`` does, with that file's
settings as the defaults (``vacation_defaults``) — ``--ft-steps`` (300) at ``--ft-lr`` (3e-4) on 128 of its own
base frames (``--train-config``) plus the ``--budget`` (48) frames chosen from a pool, mined with the vacation's
triggers (``light_margin`` + night). Unlike the vacation's synthetic pool, the benchmark's pools are shards
without lighting metadata, so the night trigger reads the images. Two pools of other world seeds,
``--pool-frames`` (480) each: ``natural`` (the world's own lighting
mix: day, dusk and night drawn per scene, as configs/engine/pool.yaml) and ``rare`` (``--night-fraction``
night, the rest day). Methods: none, random, mined, mined_auto (mined, labelled by the reference model
itself over each frame's clip). Every model is evaluated on the same night and day suites over all seven
tasks (``reference_suites``: drawn like the reference's training world, so lights are common;
``--eval-frames`` (48) of each of ``--eval-seeds`` world seeds) and gated against the base. The weak metric is
night ``--weak-metric`` (default the light state's balanced accuracy, what light_margin mines for). A method's
gain is reported over the reference model and over the control (``none``: the same fine-tune without new
frames), since the fine-tune's own steps move the metrics too; what the chosen frames bought is the latter::

    # ~13 min per seed and pool on an idle core
    python benchmarks/engine.py --from zoo:tiny-world --seeds 0,1,2 --work /tmp/engine-ref
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CAMERA_NAMES = ("main", "rear")
TASKS = {"drivable": {}, "depth": {}}
METRICS = {"drivable": "miou", "depth": "abs_rel"}
SUITES = {"night": {"lighting": "night"}, "day": {"lighting": "day"}}


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """The setup every world renders and the model is built for: two cameras of the default rig."""
    from hydranet.setup import default_rig

    cams = [c.model_dump() for c in default_rig((args.height, args.width)).cameras if c.name in CAMERA_NAMES]
    return {"image_size": [args.height, args.width], "rigs": {"two": cams},
            "grid": {"x_range": [-32.0, 32.0], "y_range": [-32.0, 32.0], "cell": 2.0}}


def world(args: argparse.Namespace, seed: int, scenes: int, **over: Any) -> dict[str, Any]:
    return {"seed": seed, "num_scenes": scenes, "frames_per_scene": args.frames_per_scene, "setup": setup(args),
            **over}


def render(out: Path, cfg: dict[str, Any], frames: int) -> str:
    from hydranet.world.config import load_world_config
    from hydranet.world.generate import generate

    generate(out, load_world_config(cfg), frames, shard_size=64)
    return str(out)


def train(args: argparse.Namespace, out: Path, datasets: dict[str, str], steps: int, lr: float, seed: int,
          start: str | None = None) -> str:
    from rich.console import Console

    from hydranet.checkpoint import resolve_checkpoint
    from hydranet.train.config import config_from_dict
    from hydranet.train.run import run_training

    if (out / "checkpoints" / "latest.json").exists():
        return str(resolve_checkpoint(out))
    cfg = config_from_dict({
        "data": {"datasets": {n: {"kind": "shards", "path": p} for n, p in datasets.items()}},
        "model": {"preset": "tiny", "setup": setup(args), "tasks": TASKS},
        "train": {"steps": steps, "batch_size": args.batch, "lr": lr, "warmup_steps": min(20, steps // 5),
                  "weight_decay": 0.01, "clip_grad_norm": 5.0, "log_every": steps, "seed": seed, "threads": 1,
                  "num_workers": 0, "balancing": {"kind": "uncertainty"}},
    }, "<benchmark>")
    run_training(cfg, out, from_ckpt=start, progress=False, console=Console(quiet=True))
    return str(resolve_checkpoint(out))


def suites(args: argparse.Namespace, work: Path) -> list[Any]:
    import yaml

    from hydranet.eval.suite import load_suite

    out = []
    for name, scen in SUITES.items():  # the suites render the model's setup
        spec = {"name": name, "world": {"fog": 0.0, "num_scenes": 40, "frames_per_scene": 10},
                "scenarios": {name: scen}, "seeds": [9100, 9100 + args.eval_seeds], "frames": args.eval_frames,
                "bootstrap": 200, "tasks": {"drivable": {"thresholds": {"miou": ">= 0.0"},
                                                          "tolerance": {"miou": 0.03}},
                                             "depth": {"thresholds": {"abs_rel": "<= 10"},
                                                       "tolerance": {"abs_rel": 0.05}}}}
        path = work / f"suite_{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        out.append(load_suite(path))
    return out


def rare_night_pool(args: argparse.Namespace, w: Path, seed: int) -> str:
    """The unlabelled pool: ``--pool-frames`` frames of which ``--night-fraction`` are night (whole
    scenes), the rest day — the weak condition is rare in what the fleet sends back. One shard
    directory (day scenes first, then night scenes); ``pool_lighting.json`` records which is which
    for the report (the miner never sees it)."""
    from hydranet.data.shards import ShardWriter
    from hydranet.datasets import open_dataset

    out = w / "pool"
    if (out / "manifest.json").exists():
        return str(out)
    per = args.frames_per_scene
    n_night = max(per, round(args.pool_frames * args.night_fraction / per) * per)
    n_day = args.pool_frames - n_night
    day = open_dataset(render(w / "pool_day", world(args, 200 + seed, n_day // per + 1, lighting="day"), n_day))
    night = open_dataset(render(w / "pool_night", world(args, 300 + seed, n_night // per + 1, lighting="night"),
                                n_night))
    with ShardWriter(out, shard_size=64, setup=day.setup,
                     source={"kind": "engine-benchmark-pool", "day": n_day, "night": n_night}) as wr:
        for ds in (day, night):
            for i in range(len(ds)):
                wr.write(ds[i])
    (w / "pool_lighting.json").write_text(json.dumps(["day"] * n_day + ["night"] * n_night))
    return str(out)


def teacher(args: argparse.Namespace, work: Path) -> str:
    data = render(work / "teacher_data", world(args, 777, args.teacher_frames // args.frames_per_scene + 1,
                                               fog=0.0), args.teacher_frames)
    return train(args, work / "teacher", {"t": data}, args.teacher_steps, args.lr, 0)


def run_seed(args: argparse.Namespace, seed: int, work: Path, teacher_ckpt: str) -> dict[str, Any]:
    from hydranet.engine.autolabel import AutoLabelConfig, autolabel_items
    from hydranet.engine.label import oracle_items, write_labelled
    from hydranet.engine.mine import build_triggers, mine
    from hydranet.engine.pool import load_mining_model, model_tasks, open_pool
    from hydranet.engine.triggers import parse_trigger_specs

    t0 = time.perf_counter()
    w = work / f"seed_{seed}"
    base_data = render(w / "base_data", world(args, 100 + seed, args.base_frames // args.frames_per_scene + 1,
                                              lighting="day"), args.base_frames)
    pool_path = rare_night_pool(args, w, seed)
    base = train(args, w / "base", {"base": base_data}, args.base_steps, args.lr, seed)
    model = load_mining_model(base)
    pool = open_pool(pool_path)
    labelled_pool = open_pool(pool_path, with_labels=True)
    picks: dict[str, list[int]] = {"random": sorted(np.random.default_rng(seed).choice(
        len(pool), args.budget, replace=False).tolist())}
    mined_info = {}
    for name, trig in (("mined", args.triggers), ("mined_uncertainty", "entropy:task=drivable")):
        res = mine(model, pool, build_triggers(parse_trigger_specs(trig), model_tasks(model)), args.budget)
        picks[name] = [q["index"] for q in res.queue]
        mined_info[name] = [q["reason"] for q in res.queue[:3]]
    light = json.loads((w / "pool_lighting.json").read_text())
    lighting = {k: {c: sum(light[i] == c for i in v) for c in ("day", "night")} for k, v in picks.items()}
    queue = {k: [{"rank": r + 1, "index": i, "frame_id": f"{labelled_pool[i].scene_id}#"
                  f"{labelled_pool[i].frame_index}"} for r, i in enumerate(v)] for k, v in picks.items()}
    added: dict[str, str | None] = {"none": None}
    cost: dict[str, dict] = {}
    for name in ("random", "mined", "mined_uncertainty"):
        out = w / f"labels_{name}"
        cost[name] = write_labelled(out, oracle_items(queue[name], labelled_pool, list(TASKS)), labelled_pool,
                                    {"labeller": "oracle"})["cost"]
        added[name] = str(out)
    tmodel = load_mining_model(teacher_ckpt)
    auto = write_labelled(w / "labels_mined_auto", autolabel_items(queue["mined"], labelled_pool, tmodel,
                                                                   teacher_ckpt, AutoLabelConfig(clip_radius=10)),
                          labelled_pool, {"labeller": "auto"})
    added["mined_auto"] = auto["path"]
    cost["mined_auto"] = auto["cost"]
    models = {"base": model}
    for name, extra in added.items():
        data = {"base": base_data} | ({"added": extra} if extra else {})
        models[name] = load_mining_model(train(args, w / f"ft_{name}", data, args.ft_steps, args.ft_lr, seed,
                                               start=base))
    result: dict[str, Any] = {"seed": seed, "picked_lighting": lighting, "mined_reasons": mined_info,
                              "label_cost": cost, **scored(models, suites(args, work), METRICS)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def scored(models: dict[str, Any], suites: list[Any], metrics: dict[str, str]) -> dict[str, Any]:
    """Every model on the same frames of each suite: ``{"suites": {suite: {model: {task: metrics[task]}}},
    "gate": {suite: {model: [failed gate rows against "base"]}}}``."""
    from hydranet.eval.gate import gate
    from hydranet.eval.runner import run_suite

    out: dict[str, Any] = {"suites": {}, "gate": {}}
    for suite in suites:
        runs = run_suite(models, suite, batch_size=4)
        out["suites"][suite.name] = {m: {t: _clean(runs[m].tasks[t].metrics[k]) for t, k in metrics.items()}
                                     for m in models}
        out["gate"][suite.name] = {m: [f"{r.task}.{r.metric}: {r.reason}" for r in gate(runs["base"], runs[m])
                                       if r.status == "fail"] for m in models if m != "base"}
    return out


def gains_over_base(results: list[dict[str, Any]], suites: Any, metrics: dict[str, str],
                    methods: Any) -> dict[str, Any]:
    """Per ``suite/task.metric`` and method: the gain over "base" (oriented so positive is better), its mean,
    seed std and per-seed values."""
    gains: dict[str, Any] = {}
    for suite in suites:
        for task, metric in metrics.items():
            sign = -1.0 if metric == "abs_rel" else 1.0
            gains[f"{suite}/{task}.{metric}"] = {}
            for m in methods:
                vals = [sign * (r["suites"][suite][m][task] - r["suites"][suite]["base"][task]) for r in results]
                gains[f"{suite}/{task}.{metric}"][m] = {
                    "mean": round(statistics.mean(vals), 4),
                    "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
                    "per_seed": [round(v, 4) for v in vals]}
    return gains


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def summarise(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    methods = ["none", "random", "mined", "mined_uncertainty", "mined_auto"]
    gains = gains_over_base(results, SUITES, METRICS, methods)
    weak = gains["night/drivable.miou"]
    ratio = {m: (round(weak[m]["mean"] / weak["random"]["mean"], 2) if weak["random"]["mean"] > 0 else None)
             for m in ("mined", "mined_uncertainty", "mined_auto")}
    over_control = {m: round(weak[m]["mean"] - weak["none"]["mean"], 4) for m in weak}
    regressions = {m: sum(len(r["gate"][s][m]) for r in results for s in SUITES) for m in methods}
    return {
        "benchmark": "engine", "seeds": [r["seed"] for r in results], "config": vars(args),
        "gain_vs_base": gains, "weak_suite": "night/drivable.miou",
        "mined_over_random_ratio": ratio, "gain_over_no_new_data_control": over_control,
        "goal": "mined gain >= 1.5x random gain on the weak suite, no gate regression",
        "goal_met": bool(ratio["mined"] is not None and ratio["mined"] >= 1.5 and regressions["mined"] == 0),
        "gate_failures_per_method": regressions,
        "picked_lighting": {r["seed"]: r["picked_lighting"] for r in results},
        "per_seed": results,
    }


REF_METHODS = ("none", "random", "mined", "mined_auto")
REF_METRICS = {"traffic_light": "balanced_accuracy", "drivable": "miou", "depth": "abs_rel",
               "detection2d": "map", "objects3d": "map", "bev_semantic": "miou", "lanes": "f1"}


def reference_pool(args: argparse.Namespace, w: Path, kind: str, seed: int, model_setup: Any) -> str:
    """An unlabelled pool of ``--pool-frames`` frames in the model's setup, as one shard directory:
    ``natural`` (lighting drawn per scene) or ``rare`` (``--night-fraction`` night scenes, the rest day).
    ``pool_<kind>_lighting.json`` records each frame's lighting for the report; the miner never sees it."""
    from hydranet.data.shards import ShardWriter
    from hydranet.world import SyntheticWorld
    from hydranet.world.config import load_world_config

    out = w / f"pool_{kind}"
    if (out / "manifest.json").exists():
        return str(out)
    per = args.frames_per_scene
    base = {"num_scenes": args.pool_frames // per + 1, "frames_per_scene": per, "setup": model_setup}
    if kind == "natural":
        parts = [(SyntheticWorld(load_world_config(base | {"seed": 2400 + seed, "lighting": "random"})),
                  args.pool_frames)]
    else:
        n_night = max(per, round(args.pool_frames * args.night_fraction / per) * per)
        parts = [(SyntheticWorld(load_world_config(base | {"seed": 2500 + seed, "lighting": "day"})),
                  args.pool_frames - n_night),
                 (SyntheticWorld(load_world_config(base | {"seed": 2600 + seed, "lighting": "night"})), n_night)]
    lighting = []
    with ShardWriter(out, shard_size=64, setup=model_setup, source={"kind": f"engine-benchmark-{kind}-pool"}) as wr:
        for world, n in parts:
            for i in range(n):
                wr.write(world[i])
                lighting.append(world.scene(i).lighting)
    (w / f"pool_{kind}_lighting.json").write_text(json.dumps(lighting))
    return str(out)


def reference_finetune(args: argparse.Namespace, out: Path, added: str | None, seed: int) -> str:
    """Fine-tune ``--from`` as configs/engine/vacation.yaml does, on its base frames (+ ``added``)."""
    from rich.console import Console

    from hydranet.checkpoint import resolve_checkpoint
    from hydranet.train.config import config_from_dict, config_to_dict
    from hydranet.train.run import run_training
    from hydranet.train.subgraph import load_train_config

    if (out / "checkpoints" / "latest.json").exists():
        return str(resolve_checkpoint(out))
    # The vacation's own overrides (warm-up, no periodic eval), its base frames replaced by --base-frames.
    shipped = [o for o in shipped_vacation().train.overrides if not o.startswith(BASE_FRAMES_OVERRIDE)]
    cfg = load_train_config(args.train_config, [
        f"{BASE_FRAMES_OVERRIDE}{args.base_frames}", *shipped,
        f"train.steps={args.ft_steps}", f"train.lr={args.ft_lr}", f"train.ckpt_every={args.ft_steps}",
        f"train.log_every={args.ft_steps}", f"train.seed={seed}", "train.threads=1"], None)
    tree = config_to_dict(cfg)
    if added:
        tree["data"]["datasets"]["added"] = {"kind": "shards", "path": added}
    run_training(config_from_dict(tree, "<engine benchmark>"), out, from_ckpt=args.start, progress=False,
                 console=Console(quiet=True))
    return str(resolve_checkpoint(out))


def reference_suites(args: argparse.Namespace, work: Path) -> list[Any]:
    """Night and day suites over every task of the reference model, drawn like its training world (the layout
    and signal weights of ``--train-config``'s ``reference`` dataset: intersection-heavy, every light state
    often) so the light metrics rest on enough lights: ``--eval-frames`` frames per seed, ``--eval-seeds``
    seeds. Gate tolerances as the shipped suites' (lights 0.1 on balanced accuracy; the headline default 0.02
    elsewhere)."""
    import yaml

    from hydranet.eval.suite import load_suite
    from hydranet.train.config import load_config
    from hydranet.train.data import world_config

    trained_on = world_config(load_config(args.train_config), "reference")
    draw = {"layout_weights": trained_on.layout_weights, "signal_weights": trained_on.signal_weights, "fog": 0.0}
    out = []
    for name, lighting in (("night", "night"), ("day", "day")):
        spec = {"name": name, "world": {"num_scenes": 60, "frames_per_scene": 4, **draw},
                "scenarios": {name: {"lighting": lighting}}, "seeds": [9300, 9300 + args.eval_seeds],
                "frames": args.eval_frames, "bootstrap": 200,
                "tasks": {t: ({"tolerance": {"balanced_accuracy": 0.1}} if t == "traffic_light" else {})
                          for t in REF_METRICS}}
        path = work / f"reference_suite_{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        out.append(load_suite(path))
    return out


def run_reference_seed(args: argparse.Namespace, seed: int, kind: str, work: Path) -> dict[str, Any]:
    """One seed, one pool (``natural`` or ``rare``), from the reference model: every method fine-tuned,
    evaluated on the night and day suites, gated against the base."""
    from hydranet.engine.autolabel import AutoLabelConfig, autolabel_items
    from hydranet.engine.label import oracle_items, write_labelled
    from hydranet.engine.mine import build_triggers, mine
    from hydranet.engine.pool import load_mining_model, model_tasks, open_pool
    from hydranet.engine.triggers import parse_trigger_specs

    t0 = time.perf_counter()
    w = work / f"{kind}_seed_{seed}"
    base = load_mining_model(args.start)
    pool_path = reference_pool(args, w, kind, seed, base.setup)
    pool, labelled = open_pool(pool_path), open_pool(pool_path, with_labels=True)
    picks = {"random": sorted(np.random.default_rng(seed).choice(len(pool), args.budget, replace=False).tolist())}
    res = mine(base, pool, build_triggers(parse_trigger_specs(args.triggers), model_tasks(base)), args.budget,
               max_per_scene=args.max_per_scene)
    picks["mined"] = [q["index"] for q in res.queue]
    light = json.loads((w / f"pool_{kind}_lighting.json").read_text())
    lighting = {k: dict(sorted({c: sum(light[i] == c for i in v) for c in set(light)}.items()))
                for k, v in picks.items()}
    queue = {k: [{"rank": r + 1, "index": i, "frame_id": f"{labelled[i].scene_id}#{labelled[i].frame_index}"}
                 for r, i in enumerate(v)] for k, v in picks.items()}
    added: dict[str, str | None] = {"none": None}
    for name in ("random", "mined"):
        added[name] = write_labelled(w / f"labels_{name}", oracle_items(queue[name], labelled), labelled,
                                     {"labeller": "oracle"}, overwrite=True)["path"]
    added["mined_auto"] = write_labelled(w / "labels_mined_auto", autolabel_items(
        queue["mined"], labelled, base, args.start, AutoLabelConfig(clip_radius=10)), labelled,
        {"labeller": "auto"}, overwrite=True)["path"]
    models = {"base": base} | {m: load_mining_model(reference_finetune(args, w / f"ft_{m}", added[m], seed))
                               for m in REF_METHODS}
    result: dict[str, Any] = {"seed": seed, "pool": kind, "picked_lighting": lighting,
                              **scored(models, reference_suites(args, work), REF_METRICS)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def summarise_reference(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Gains over the reference model per pool, suite and task; mined over random on the weak metric."""
    weak_metric = f"night/{args.weak_metric}.{REF_METRICS[args.weak_metric]}"
    out: dict[str, Any] = {"benchmark": "engine", "from": args.start, "config": vars(args),
                           "weak_metric": weak_metric, "pools": {}}
    for kind in sorted({r["pool"] for r in results}):
        rs = [r for r in results if r["pool"] == kind]
        gains = gains_over_base(rs, ("night", "day"), REF_METRICS, REF_METHODS)
        weak = gains[weak_metric]
        ratio = {m: (round(weak[m]["mean"] / weak["random"]["mean"], 2) if weak["random"]["mean"] > 0 else None)
                 for m in ("mined", "mined_auto")}
        out["pools"][kind] = {
            "seeds": [r["seed"] for r in rs], "base": {s: rs[0]["suites"][s]["base"] for s in ("night", "day")},
            "gain_vs_base": gains, "weak_gain": {m: weak[m]["mean"] for m in REF_METHODS},
            # What the chosen frames add beyond the fine-tune's own steps (the `none` control).
            "weak_gain_over_control": {m: round(weak[m]["mean"] - weak["none"]["mean"], 4) for m in REF_METHODS},
            "weak_gain_seed_std": {m: weak[m]["std"] for m in REF_METHODS},
            "mined_over_random_over_control": {
                m: (round((weak[m]["mean"] - weak["none"]["mean"]) / (weak["random"]["mean"] - weak["none"]["mean"]),
                          2) if weak["random"]["mean"] > weak["none"]["mean"] else None)
                for m in ("mined", "mined_auto")},
            "mined_over_random_ratio": ratio,
            "gate_failures_per_method": {m: sum(len(r["gate"][s][m]) for r in rs for s in ("night", "day"))
                                         for m in REF_METHODS},
            "gate_failures": {f"{r['seed']}/{s}/{m}": r["gate"][s][m] for r in rs for s in ("night", "day")
                              for m in REF_METHODS if r["gate"][s][m]},
            "picked_lighting": {r["seed"]: r["picked_lighting"] for r in rs},
            "seconds": sum(r["seconds"] for r in rs)}
    return out


# Defaults of the day-only base's small world; ``--from`` takes the shipped vacation's own (``vacation_defaults``).
DAY_BASE_DEFAULTS: dict[str, Any] = {
    "triggers": "entropy:task=drivable,condition:name=night", "frames_per_scene": 5, "base_frames": 40,
    "pool_frames": 150, "budget": 4, "ft_steps": 100, "ft_lr": 2e-3, "eval_frames": 12}
VACATION = Path(__file__).resolve().parents[1] / "configs" / "engine" / "vacation.yaml"
BASE_FRAMES_OVERRIDE = "data.datasets.reference.frames="


@functools.cache
def shipped_vacation() -> Any:
    """``configs/engine/vacation.yaml`` as ``hydranet.engine.pipeline.Pipeline``, read once per process."""
    from hydranet.engine.pipeline import load_pipeline

    return load_pipeline(VACATION)


def vacation_defaults() -> dict[str, Any]:
    """``--from`` defaults read from ``configs/engine/vacation.yaml`` and its pool, so the benchmark measures the
    example as shipped: triggers, budget, pool size (the miner's ``limit``), fine-tune steps and lr, base frames
    (its ``data.datasets.reference.frames`` override), frames per scene. ``eval_frames`` is the benchmark's own."""
    from hydranet.world.config import load_world_config

    pipe = shipped_vacation()
    base = [o.removeprefix(BASE_FRAMES_OVERRIDE) for o in pipe.train.overrides if o.startswith(BASE_FRAMES_OVERRIDE)]
    if not pipe.pool.startswith("synthetic:") or len(base) != 1 or pipe.mine.limit is None:
        raise SystemExit(f"benchmarks/engine.py: {VACATION} must name a synthetic pool, a mine.limit and one "
                         f"train.overrides entry {BASE_FRAMES_OVERRIDE}N: the --from defaults are read from it")
    pool = load_world_config(pipe.pool.removeprefix("synthetic:"))
    return {"triggers": pipe.mine.triggers, "frames_per_scene": pool.frames_per_scene, "base_frames": int(base[0]),
            "pool_frames": pipe.mine.limit, "budget": pipe.mine.budget, "ft_steps": pipe.train.steps,
            "ft_lr": pipe.train.lr, "eval_frames": 48}


def _mode_default(key: str, from_defaults: dict[str, Any]) -> str:
    """Help text naming a setting's default in both modes."""
    return f"default {DAY_BASE_DEFAULTS[key]}; with --from {from_defaults[key]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shipped = vacation_defaults()
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--work", default="/tmp/hydranet-engine-bench")
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--frames-per-scene", type=int, default=None, help=_mode_default("frames_per_scene", shipped))
    p.add_argument("--base-frames", type=int, default=None, help=_mode_default("base_frames", shipped))
    p.add_argument("--pool-frames", type=int, default=None, help=_mode_default("pool_frames", shipped))
    p.add_argument("--budget", type=int, default=None, help=f"frames bought ({_mode_default('budget', shipped)})")
    p.add_argument("--night-fraction", type=float, default=0.1, help="share of night frames in the pool")
    p.add_argument("--base-steps", type=int, default=200)
    p.add_argument("--ft-steps", type=int, default=None, help=_mode_default("ft_steps", shipped))
    p.add_argument("--teacher-frames", type=int, default=150)
    p.add_argument("--teacher-steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=6e-3)
    p.add_argument("--ft-lr", type=float, default=None, help=_mode_default("ft_lr", shipped))
    p.add_argument("--eval-frames", type=int, default=None,
                   help=f"per world seed and suite ({_mode_default('eval_frames', shipped)})")
    p.add_argument("--eval-seeds", type=int, default=2)
    p.add_argument("--triggers", default=None,
                   help=f"mining triggers ({_mode_default('triggers', shipped)})")
    p.add_argument("--max-per-scene", type=int, default=None,
                   help="--from: the miner's cap on queued frames per scene (hydranet mine --max-per-scene)")
    p.add_argument("--from", dest="start", default=None,
                   help="start from this trained model (e.g. zoo:tiny-world) instead of training a day-only base")
    p.add_argument("--train-config", default="configs/reference.yaml", help="--from: the model's training config")
    p.add_argument("--pools", default="natural,rare", help="--from: natural (the world's lighting mix), rare")
    p.add_argument("--weak-metric", default="traffic_light", choices=sorted(REF_METRICS),
                   help="--from: the night suite's task whose headline metric is the mined condition's")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for k, v in (shipped if args.start is not None else DAY_BASE_DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    seeds = [int(s) for s in args.seeds.split(",")]
    check_work_settings(work, args)
    if args.start is not None:
        results = [cached(work / f"{kind}_seed_{seed}.json", f"{kind} pool, seed {seed}",
                          lambda kind=kind, seed=seed: run_reference_seed(args, seed, kind, work))
                   for kind in args.pools.split(",") for seed in seeds]
        print(json.dumps(summarise_reference(results, args), indent=1))
        return
    tckpt = teacher(args, work)
    results = [cached(work / f"seed_{seed}.json", f"seed {seed}", lambda seed=seed: run_seed(args, seed, work, tckpt))
               for seed in seeds]
    print(json.dumps(summarise(results, args), indent=1))


# Arguments that only choose which results are run or printed; every other one changes what a seed computes.
_NOT_SETTINGS = ("seeds", "work", "pools")


def check_work_settings(work: Path, args: argparse.Namespace) -> None:
    """Refuse a ``--work`` whose cached seeds and fine-tunes were computed with other settings.

    A seed's JSON and each method's fine-tuned checkpoint are reused when present, so running again with, say,
    another ``--max-per-scene`` would print the earlier results under the new settings. The first command writes
    its settings to ``WORK/settings.json``; a later one with other settings exits naming the differences.
    Raises ``SystemExit`` (naming the file and each differing setting) on a mismatch or an unreadable file."""
    path = work / "settings.json"
    ours = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SETTINGS}
    if not path.exists():
        if any(work.iterdir()):
            raise SystemExit(f"benchmarks/engine.py: --work {work} already holds files but no settings.json (written "
                             "by this script since 2026-12-06), so what they were computed with is unknown: use "
                             "another --work, or delete this one to start again")
        path.write_text(json.dumps(ours, indent=1))
        return
    try:
        theirs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"benchmarks/engine.py: {path}: unreadable ({e}); delete --work {work} "
                         "to start again") from None
    diff = [f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in sorted(set(ours) | set(theirs))
            if theirs.get(k) != ours.get(k)]
    if diff:
        raise SystemExit(f"benchmarks/engine.py: --work {work} holds results computed with other settings "
                         f"({path}: {'; '.join(diff)}); use another --work, or delete this one to start again")


def cached(path: Path, label: str, run: Any) -> dict[str, Any]:
    """One seed's result: read from ``path`` when an earlier command wrote it, else run and written there."""
    if not path.exists():
        print(f"{label} ...", file=sys.stderr)
        path.write_text(json.dumps(run(), indent=1))
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
