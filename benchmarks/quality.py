r"""Do the detectors learn, and how fast? A budgeted learning curve on held-out synthetic scenes.

Trains the demo's model on the demo's data (``configs/demo.yaml`` + ``--set`` overrides: its world datasets
rendered once into shards under ``--data-dir``, held in memory when the config says ``train.in_memory``)
for a fixed number of optimizer **steps** -- not seconds: the curve is the same on any machine -- evaluates
the held-out scenes every ``--eval-every`` steps and prints one JSON object: per evaluation the step, the
training wall and CPU seconds (evaluations excluded; CPU seconds of this process, so the quality reached
per CPU-second can be compared across designs on a shared machine) and each task's headline metric, then
the final figures against the goals. ``--plot PATH`` renders the curves (matplotlib; ``--x cpu`` puts CPU
seconds on the x axis); ``--compare A.json[=LABEL] ...`` overlays earlier runs of this script, so one change at a
time can be read off one picture. ``--fresh N`` trains on N fresh world frames rendered by the loader as
training reads them instead (how far more data would go). ``--checkpoint CKPT`` trains nothing: it scores a
trained checkpoint (``zoo:tiny-world``, the reference model, say) on the same held-out scenes, as one point
at its step, to be set beside the curves.

Headline per task: 2D ``map`` (COCO), BEV 3D ``map`` (nuScenes-style, on the grid), traffic-light
balanced accuracy with red and yellow recall (the metric's own end-to-end figures; from the confusion matrix of
matched lights when a metric lacks them), drivable/BEV ``miou``, lanes ``f1``, depth ``abs_rel`` (lower is better).

    .venv/bin/python benchmarks/quality.py --steps 1000 --plot runs/quality_curve.png > runs/quality.json
    .venv/bin/python benchmarks/quality.py --steps 600 --set model.fusion.stride=1 --label "stride 1" \
        --compare runs/quality.json --plot runs/compare.png
    .venv/bin/python benchmarks/quality.py --checkpoint zoo:tiny-world > runs/reference_point.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from hydranet.data.sample import LIGHT_STATES
from hydranet.eval.runner import to_jsonable
from hydranet.train.config import Config, config_from_dict, config_to_dict, load_config
from hydranet.train.data import InMemoryDataset, open_source
from hydranet.train.demo import default_demo_config, materialise_shards
from hydranet.world.config import WorldConfig

HEADLINE = {"detection2d": "map", "objects3d": "map", "traffic_light": "balanced_accuracy", "drivable": "miou",
            "bev_semantic": "miou", "lanes": "f1", "depth": "abs_rel"}
# The demo's goals at the end of its budget (issue 20's table: held-out scenes of another world seed).
GOALS = {"detection2d": (">=", 0.4), "objects3d": (">=", 0.5), "traffic_light": (">=", 0.9),
         "traffic_light/red_recall": (">=", 0.95), "traffic_light/yellow_recall": (">=", 0.8),
         "drivable": (">=", 0.97), "lanes": (">=", 0.95), "bev_semantic": (">=", 0.55), "depth": ("<=", 0.12)}


def light_figures(metrics: dict[str, float]) -> dict[str, float]:
    """Balanced accuracy and per-state recall: the metric's own (``balanced_accuracy``, ``recall/<state>``)
    when it reports them, else the mean per-state recall among matched lights from
    ``confusion/<gt>/<pred>`` (rows ground truth); states without ground truth are left out."""
    if "balanced_accuracy" in metrics:
        out = {f"{s}_recall": float(metrics.get(f"recall/{s}", float("nan"))) for s in LIGHT_STATES}
        out["balanced_accuracy"] = float(metrics["balanced_accuracy"])
        return out
    conf = np.array([[metrics.get(f"confusion/{g}/{p}", 0.0) for p in LIGHT_STATES] for g in LIGHT_STATES])
    rows = conf.sum(1)
    recall = np.divide(np.diag(conf), rows, out=np.full(len(rows), np.nan), where=rows > 0)
    out = {f"{s}_recall": float(r) for s, r in zip(LIGHT_STATES, recall, strict=True)}
    out["balanced_accuracy"] = float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")
    return out


def headline(results: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {}
    for task, m in results.items():
        if task == "traffic_light":
            lights = light_figures(m)
            out["traffic_light"] = lights["balanced_accuracy"]
            out["traffic_light/red_recall"] = lights["red_recall"]
            out["traffic_light/yellow_recall"] = lights["yellow_recall"]
        elif task in HEADLINE:
            out[task] = m[HEADLINE[task]]
    return out


def goal_status(final: dict[str, float]) -> dict[str, Any]:
    out = {}
    for key, (op, target) in GOALS.items():
        if key not in final:
            continue
        v = final[key]
        met = bool(np.isfinite(v) and (v >= target if op == ">=" else v <= target))
        out[key] = {"value": v, "goal": f"{op} {target}", "met": met}
    return out


def build(cfg: Config) -> tuple[Any, Any]:
    from hydranet.model import create_model
    from hydranet.train.data import build_train_data

    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.resolved_model())
    labels = {name: task.label for name, task in model.task_objects.items()}
    data = build_train_data(cfg.data, labels, cfg.train.seed)
    return model, data


def eval_overrides(config: Path, sets: list[str], frames: int | None) -> list[str]:
    """Overrides that resize the held-out world of ``config`` (with ``sets``) to ``frames`` frames: its frames
    per scene kept, as many scenes as they need; none when ``frames`` is None (the config's own set)."""
    if frames is None:
        return []
    world = load_config(config, sets).data.eval.world
    per_scene = int(world.get("frames_per_scene", WorldConfig.model_fields["frames_per_scene"].default))
    return [f"data.eval.frames={frames}", f"data.eval.world.num_scenes={-(-frames // per_scene)}",
            f"eval.frames={frames}"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hydranet.eval.loop import dataset_batches, evaluate
    from hydranet.train.trainer import Trainer

    console = Console(stderr=True)
    overrides = [f"train.steps={args.steps}", "train.time_limit_s=null", "train.ckpt_every=0",
                 f"train.log_every={args.eval_every}"]
    if args.fresh:
        # Fresh frames all along: 3,000 steps x 4 over the demo's 480 frames would show each 25 times, and
        # held-out accuracy stops rising after ~1,000 steps on it (issue 12) while training loss falls.
        overrides += [f"data.datasets.demo.frames={args.fresh}",
                      f"data.datasets.demo.world.num_scenes={-(-args.fresh // 4)}",
                      "data.datasets.demo.world.frames_per_scene=4", "train.in_memory=false"]
    overrides += eval_overrides(args.config, args.set, args.eval_frames) + args.set
    cfg = load_config(args.config, overrides)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if not args.fresh:
        cfg = materialise_shards(cfg, Path(args.data_dir), console)
    cfg = config_from_dict(config_to_dict(cfg), "quality config")
    device = torch.device("cpu")
    model, data = build(cfg)
    if cfg.train.in_memory:
        data.dataset = InMemoryDataset(data.dataset)
    if data.eval_dataset is None:
        raise SystemExit(f"{args.config}: quality needs data.eval (held-out scenes)")
    eval_set = data.eval_dataset
    n_eval = len(eval_set) if cfg.eval.frames is None else min(cfg.eval.frames, len(eval_set))
    max_batches = -(-n_eval // cfg.eval.batch_size)
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="hydranet_quality_"))
    trainer = Trainer(cfg, model, data.dataset, out_dir, tasks=model.task_objects, index_lists=data.index_lists,
                      eval_set=None, device=device, progress=False)
    tasks = model.task_objects
    batches = trainer._loader()
    curve: list[dict[str, Any]] = []
    train_s = cpu_s = 0.0
    last_loss: dict[str, float] = {}
    while trainer.step < cfg.train.steps:
        trainer.train_mode()
        t0, c0 = time.perf_counter(), time.process_time()
        out = trainer.train_step(batches)
        train_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        for i, t in enumerate(trainer.train_tasks):
            if out["task_n"][i] > 0:
                last_loss[t] = float(out["task_loss"][i] / out["task_n"][i])
        if trainer.step % args.eval_every == 0 or trainer.step == cfg.train.steps:
            results = evaluate(trainer.forward, dataset_batches(eval_set, cfg.eval.batch_size, max_batches), tasks,
                               device=device, model_module=model)
            point = {"step": trainer.step, "train_s": round(train_s, 1), "train_cpu_s": round(cpu_s, 1),
                     **headline(results)}
            curve.append(point)
            console.print(json.dumps(point, default=float), soft_wrap=True)
    final = results
    head = headline(final)
    per_range = {k: v for k, v in final["objects3d"].items() if k.startswith("map@") or k.startswith("ap/")} \
        if "objects3d" in final else {}
    per_class_2d = {k: v for k, v in final.get("detection2d", {}).items() if k.startswith("ap")}
    return {"benchmark": "quality", "label": args.label, "config": str(args.config), "overrides": args.set,
            "training_frames": len(data.dataset), "fresh_frames": bool(args.fresh),
            "distinct_frames_per_sample": round(len(data.dataset) / (cfg.train.steps * cfg.train.batch_size), 2),
            "num_workers": cfg.train.num_workers, "in_memory": cfg.train.in_memory,
            "steps": cfg.train.steps, "eval_every": args.eval_every, "eval_frames": n_eval,
            "batch_size": cfg.train.batch_size, "threads": torch.get_num_threads(),
            "precision": cfg.train.precision, "train_seconds": round(train_s, 1),
            "train_cpu_seconds": round(cpu_s, 1),
            "final": head, "goals": goal_status(head), "objects3d_detail": per_range,
            "detection2d_detail": per_class_2d,
            "traffic_light_detail": light_figures(final["traffic_light"]) if "traffic_light" in final else {},
            "curve": curve, "last_train_loss": last_loss,
            "metrics": {t: {k: v for k, v in m.items() if not k.startswith("confusion")} for t, m in final.items()}}


def plot(results: list[dict[str, Any]], path: Path, x: str = "step") -> None:
    """One panel per task: headline metric vs step (``x="step"``) or training CPU seconds (``x="cpu"``) for every
    run, the goal as a dashed line."""
    x_key, x_label = ("train_cpu_s", "training CPU seconds") if x == "cpu" else ("step", "step")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("detection2d", "objects3d", "traffic_light", "traffic_light/red_recall",
                        "traffic_light/yellow_recall", "drivable", "lanes", "bev_semantic", "depth")
            if any(k in p for r in results for p in r["curve"])]
    cols = 4
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        defined = False
        for r in results:
            points = [(p[x_key], p[key]) for p in r["curve"]
                      if p.get(key) is not None and np.isfinite(p[key]) and p.get(x_key) is not None]
            defined = defined or bool(points)
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", ms=3, label=r.get("label") or "run")
        if not defined:
            ax.text(0.5, 0.5, "undefined at every evaluation\n(no ground truth in the held-out frames)",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
        if key in GOALS:
            ax.axhline(GOALS[key][1], color="k", ls="--", lw=0.8, label="goal")
        metric = "balanced acc." if key == "traffic_light" else ("recall" if key.endswith("_recall") else
                                                                  HEADLINE.get(key, key))
        lower = key in GOALS and GOALS[key][0] == "<="
        ax.set_title(f"{key} ({metric}{', lower is better' if lower else ''})", fontsize=10)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle("hydranet held-out learning curves (benchmarks/quality.py)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """``--checkpoint``: score a trained checkpoint (a run, a checkpoint directory or ``zoo:NAME``) on the config's
    held-out scenes -- the same frames and headline metrics as a training run's curve -- as one point at the
    checkpoint's step, so a longer-trained model can be set beside the curves (``--compare``). The model is scored
    as ``hydranet eval --data`` scores it (``hydranet.eval.evaluate_dataset``: fp32, eval mode, the data checked
    against the model by ``check_fits``); its training CPU seconds are not known here (``null``). Raises
    ``SystemExit`` naming the checkpoint when it cannot be read or its setup (rig, image size, grid, vocabularies)
    does not fit the held-out frames, which are rendered for the config's."""
    from hydranet.checkpoint import CheckpointError, load_model
    from hydranet.eval import evaluate_dataset
    from hydranet.setup import SetupMismatchError

    console = Console(stderr=True)
    cfg = load_config(args.config, eval_overrides(args.config, args.set, args.eval_frames) + args.set)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        model, ckpt = load_model(args.checkpoint)
    except CheckpointError as e:
        raise SystemExit(f"--checkpoint: {e}") from None
    if cfg.data.eval is None:
        raise SystemExit(f"{args.config}: quality needs data.eval (held-out scenes)")
    cfg = materialise_shards(cfg, Path(args.data_dir), console, only={"eval"})
    labels = sorted({task.label for task in model.task_objects.values()})
    eval_set = open_source(cfg.data.eval, labels, "data.eval", model.setup)
    try:
        scored = evaluate_dataset(model, eval_set, frames=cfg.eval.frames, batch_size=cfg.eval.batch_size,
                                  source="data.eval", model_name=str(args.checkpoint))
    except SetupMismatchError as e:
        raise SystemExit(f"--checkpoint {args.checkpoint}: its setup is not the one {args.config} renders its held-out "
                         f"scenes for: {e}") from None
    results = scored.metrics
    head = headline(results)
    step = int(ckpt.state["step"])
    return {"benchmark": "quality", "label": args.label or str(args.checkpoint), "config": str(args.config),
            "overrides": args.set, "checkpoint": str(args.checkpoint), "steps": step, "eval_frames": scored.frames,
            "threads": torch.get_num_threads(), "train_cpu_seconds": None,
            "final": head, "goals": goal_status(head),
            "traffic_light_detail": light_figures(results["traffic_light"]) if "traffic_light" in results else {},
            "curve": [{"step": step, "train_s": None, "train_cpu_s": None, **head}],
            "metrics": {t: {k: v for k, v in m.items() if not k.startswith("confusion")} for t, m in results.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, help="training config (default: configs/demo.yaml)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default: 3000, ≈30 min on 2 idle cores)")
    p.add_argument("--eval-every", type=int, default=250, help="evaluate the held-out scenes every N steps")
    p.add_argument("--set", action="append", default=[], help="config override, e.g. model.fusion.levels=[p2,p3]")
    p.add_argument("--label", default="", help="name of this run in the JSON and the picture")
    p.add_argument("--fresh", type=int, default=0, metavar="FRAMES",
                   help="train on this many fresh world frames (4 per scene) rendered by the loader as training "
                        "reads them, instead of the config's own data")
    p.add_argument("--eval-frames", type=int, default=None,
                   help="held-out frames (default: the config's data.eval; its frames per scene kept)")
    p.add_argument("--data-dir", default="runs/quality/data",
                   help="where the config's world datasets are rendered into shards (reused when up to date)")
    p.add_argument("--out", default=None, help="training run directory (default: a temporary one)")
    p.add_argument("--plot", type=Path, default=None, help="write the learning-curve picture here (PNG)")
    p.add_argument("--compare", nargs="*", default=[], metavar="JSON[=LABEL]",
                   help="earlier JSON results to overlay; =LABEL names a curve in the legend instead of its own label")
    p.add_argument("--plot-only", action="store_true", help="only draw --compare results into --plot")
    p.add_argument("--x", choices=["step", "cpu"], default="step", help="x axis of the plot: steps or CPU seconds")
    p.add_argument("--checkpoint", default=None,
                   help="instead of training: score this trained checkpoint (a run, a checkpoint directory or "
                        "zoo:NAME) on the same held-out scenes, as one point at its step (to set beside curves)")
    args = p.parse_args(argv)
    args.config = args.config or default_demo_config()
    if args.steps < 1 or args.eval_every < 1:
        p.error("--steps and --eval-every must be >= 1")
    earlier = []
    for spec in args.compare:
        path, _, label = spec.partition("=")
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            p.error(f"--compare {path}: {e}")
        earlier.append({**result, "label": label} if label else result)
    if args.plot_only:
        if not args.plot or not earlier:
            p.error("--plot-only needs --plot and --compare")
        plot(earlier, args.plot, args.x)
        return 0
    result = evaluate_checkpoint(args) if args.checkpoint else run(args)
    if args.plot:
        plot([*earlier, result], args.plot, args.x)
        result["plot"] = str(args.plot)
    # Undefined metrics (NaN: e.g. no light in the held-out frames) are written as null: strict JSON.
    print(json.dumps(to_jsonable(result), indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
