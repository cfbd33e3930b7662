"""``hydranet demo``: data -> training -> evaluation -> pictures + metrics table, in one command.

1. Every ``kind: world`` dataset of the demo config (``configs/demo.yaml``) is rendered once into
   shards under ``OUT/data/<name>`` (B's generator; reused when up to date), and the config is
   pointed at those shards.
2. The config trains all seven tasks into ``OUT/train`` (TensorBoard in ``OUT/train/tb``). A finished
   run in OUT is reused and an interrupted one resumed, so re-running the demo is cheap and safe.
3. The trained and the untrained network are evaluated on the held-out frames with every task's
   metric; ``OUT/metrics.md`` and ``OUT/metrics.json`` hold the numbers, ``OUT/pictures/`` the
   prediction-vs-ground-truth pictures and ``OUT/demo.png`` a contact sheet of them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from hydranet.checkpoint import load_model
from hydranet.console import make_console
from hydranet.data.manifest import ShardError
from hydranet.eval.loop import dataset_batches, evaluate
from hydranet.eval.sequence import evaluate_sequences, scene_runs
from hydranet.model import create_model
from hydranet.train.config import Config, ConfigError, config_from_dict, config_to_dict, load_config
from hydranet.train.data import open_source, world_config
from hydranet.train.report import contact_sheet, draw_predictions, write_metrics_report
from hydranet.train.run import run_training
from hydranet.world.generate import generate


def default_demo_config(name: str = "demo.yaml") -> Path:
    """``configs/<name>`` of the source tree (also where an editable install finds it); ``temporal.yaml``
    is the video demo."""
    here = Path(__file__).resolve().parents[2] / "configs" / name
    if here.is_file():
        return here
    packaged = Path(__file__).resolve().parents[1] / "configs" / name
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"demo config not found at {here} (or {packaged}); pass --config")


def materialise_shards(cfg: Config, data_dir: Path, console: Console, workers: int = 2) -> Config:
    """Render world datasets to shards (or reuse them) and return the config pointing at the shards."""
    tree = config_to_dict(cfg)
    sources = dict(tree["data"]["datasets"])
    if tree["data"].get("eval"):
        sources["eval"] = tree["data"]["eval"]
    for name, ds in sources.items():
        if ds["kind"] != "world":
            continue
        out = data_dir / name
        world = world_config(cfg, name)
        t0 = time.perf_counter()
        with console.status(f"rendering {ds['frames']} frames of the synthetic world into {out} ..."):
            try:
                result = generate(out, world, frames=ds["frames"], workers=workers)
            except ShardError as e:  # data from another config or version: the demo owns OUT/data
                console.print(f"  {e}: rendering again")
                result = generate(out, world, frames=ds["frames"], workers=workers, force=True)
        what = "reused" if result.up_to_date else f"rendered in {time.perf_counter() - t0:.0f}s"
        console.print(f"  data {name}: {result.manifest.num_samples} frames, {what} -> {out}")
        new = {"kind": "shards", "path": str(out), "frames": None, "world": {}}
        if name == "eval":
            tree["data"]["eval"] = new
        else:
            tree["data"]["datasets"][name] = new
    return config_from_dict(tree, "demo config (shards)")


def _finished(train_dir: Path) -> bool:
    summary = train_dir / "train_summary.json"
    if not summary.is_file():
        return False
    s = json.loads(summary.read_text())
    return s.get("steps") is not None and s.get("steps") == s.get("planned_steps")


def _train_or_reuse(cfg: Config, train_dir: Path, retrain: bool, console: Console) -> dict[str, Any]:
    """The training summary of the run in ``train_dir``: reused when finished with the same config, resumed
    when interrupted, trained afresh when the config changed or ``retrain``."""
    saved = train_dir / "config.yaml"
    changed = saved.is_file() and yaml.safe_load(saved.read_text()) != config_to_dict(cfg)
    if (retrain or changed) and train_dir.exists():
        if changed and not retrain:
            console.print(f"  the config differs from the run in {train_dir}: training afresh")
        shutil.rmtree(train_dir)
    if _finished(train_dir):
        console.print(f"  reusing the finished training run in {train_dir} (--retrain trains again)")
        return json.loads((train_dir / "train_summary.json").read_text())
    resume = (train_dir / "checkpoints" / "latest.json").exists()
    return run_training(cfg, train_dir, resume=resume, console=console)


def _stream_video(model: Any, eval_set: Any, n_eval: int, out: Path, console: Console) -> None:
    """A temporal model: stream the held-out scenes through its memory, write ``out/video.json`` and print
    the objects3d video figures (mAP, mAVE, occluded recall, flicker)."""
    with console.status("streaming the held-out scenes through the video memory ..."):
        video = evaluate_sequences(model, eval_set, scene_runs(eval_set, n_eval), list(model.task_objects))
    (out / "video.json").write_text(json.dumps(video, indent=1, default=float))
    o = video.get("objects3d", {})
    nan = float("nan")
    console.print(f"  video (streamed): objects3d mAP {o.get('map', nan):.3f}  mAVE {o.get('ave', nan):.2f} m/s"
                  f"  occluded recall {o.get('occluded_recall', nan):.3f}  flicker {o.get('flicker', nan):.3f}"
                  f" -> {out / 'video.json'}")


def run_demo(out: Path, config: Path | None = None, overrides: list[str] | None = None, retrain: bool = False,
             pictures: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """``hydranet demo``: render the data, train (reuse or resume a run in ``out``), evaluate trained vs untrained
    on the held-out frames, draw pictures, write ``metrics.md``/``metrics.json`` (module docstring).

    Returns ``{"metrics", "baseline", "pictures", "summary"}``. Raises ``ConfigError`` for a bad config or a
    ``train.time_limit_s`` (the demo's numbers must not depend on machine speed), ``ValueError`` without
    ``data.eval``.
    """
    console = console or make_console()
    t_start = time.perf_counter()
    config = config or default_demo_config()
    cfg = load_config(config, overrides)
    if cfg.train.time_limit_s is not None:
        raise ConfigError(f"{config}: train.time_limit_s: the demo does a fixed amount of work on every machine "
                          "(its numbers must not depend on the machine's speed); remove the time limit")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    console.print(f"[bold]hydranet demo[/] config {config} -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    cfg = materialise_shards(cfg, out / "data", console)
    train_dir = out / "train"
    summary = _train_or_reuse(cfg, train_dir, retrain, console)
    t_trained = time.perf_counter()

    model, _ = load_model(train_dir)
    tasks = model.task_objects
    if cfg.data.eval is None:
        raise ValueError(f"{config}: the demo needs data.eval (held-out frames)")
    eval_set = open_source(cfg.data.eval, sorted({t.label for t in tasks.values()}))
    n_eval = len(eval_set) if cfg.eval.frames is None else min(cfg.eval.frames, len(eval_set))
    max_batches = -(-n_eval // cfg.eval.batch_size)
    with console.status(f"evaluating the trained network on {n_eval} held-out frames ..."):
        results = evaluate(model, dataset_batches(eval_set, cfg.eval.batch_size, max_batches), tasks)
    torch.manual_seed(cfg.train.seed)  # the same initialisation the training run started from
    untrained = create_model(cfg.resolved_model()).eval()
    with console.status("evaluating the untrained network (the baseline) ..."):
        baseline = evaluate(untrained, dataset_batches(eval_set, cfg.eval.batch_size, max_batches))
    n_pic = cfg.eval.pictures if pictures is None else pictures
    step = max(1, n_eval // max(1, n_pic))
    indices = list(range(0, n_eval, step))[:n_pic]
    grid = model.setup.grid
    with console.status(f"drawing {len(indices)} frames ..."):
        paths = draw_predictions(model, tasks, eval_set, indices, grid, out / "pictures")
    sheet = contact_sheet([p for p in paths if p.stem.count("_") == 1][:3], out / "demo.png")
    threads = torch.get_num_threads()
    meta = {"eval_frames": n_eval, "train_seconds": summary.get("seconds", t_trained - t_start), "device": "cpu",
            "threads": threads, "global_batch": cfg.train.batch_size * cfg.train.grad_accum,
            "total_seconds": time.perf_counter() - t_start, "config": str(config)}
    if getattr(model, "is_temporal", False):  # video: stream the held-out scenes through the memory
        _stream_video(model, eval_set, n_eval, out, console)
    md, js = write_metrics_report(out, results, baseline, tasks, summary, meta)
    console.print()
    console.print(md.read_text(), soft_wrap=True, markup=False)
    console.print(f"[bold green]demo done[/] in {meta['total_seconds']:.0f}s "
                  f"(training {summary.get('steps')}/{summary.get('planned_steps')} steps)")
    console.print(f"  metrics     {md}  {js}")
    console.print(f"  pictures    {out / 'pictures'}/ ({len(paths)} files), overview {sheet}")
    console.print(f"  checkpoint  {summary.get('checkpoint')}  (hydranet.checkpoint.load_model)")
    console.print(f"  tensorboard tensorboard --logdir {train_dir / 'tb'}")
    return {"metrics": results, "baseline": baseline, "pictures": [str(p) for p in paths], "summary": summary}
