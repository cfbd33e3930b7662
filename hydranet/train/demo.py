"""``hydranet demo``: data -> training -> evaluation -> pictures + metrics table, in one command.

1. Every ``kind: world`` dataset of the demo config (``configs/demo.yaml``) is rendered once into
   shards under ``OUT/data/<name>`` (B's generator; reused when up to date), and the config is
   pointed at those shards.
2. The config trains all seven tasks into ``OUT/train`` (TensorBoard in ``OUT/train/tb``). A finished
   run in OUT is reused and an interrupted one resumed, so re-running the demo is cheap and safe.
3. The trained and the untrained network are evaluated on the held-out frames with every task's
   metric; ``OUT/metrics.md`` and ``OUT/metrics.json`` hold the numbers, ``OUT/pictures/`` the
   prediction-vs-ground-truth pictures of frames chosen to show every object class and light state,
   and ``OUT/demo.png`` a contact sheet of them.

The demo keeps its word: it states its budget (``BUDGET_S`` from a fresh clone, install included, on an
idle 2-core machine) and the split of the reference run (``docs/results/demo.json``, the committed
``metrics.json`` of a run on such a machine), shows each phase with an ETA, says when this machine is
busier or slower than the reference (``hydranet.train.machine``) instead of silently taking longer, and
writes every phase's seconds to ``metrics.json`` (``meta.seconds``; the install's from ``make``'s
``.venv/install_seconds``), which is where the README's timing figures come from.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from hydranet.checkpoint import load_model
from hydranet.console import make_console, progress, working
from hydranet.data import ShardError
from hydranet.eval import dataset_batches, evaluate, evaluate_clips, scene_runs
from hydranet.json_files import write_json
from hydranet.model import create_model
from hydranet.train.config import Config, ConfigError, config_from_dict, config_to_dict, load_config
from hydranet.train.data import open_source, world_config
from hydranet.train.distributed import resolve_device
from hydranet.train.machine import Machine, slower_than_expected
from hydranet.train.report import choose_frames, contact_sheet, draw_predictions, write_metrics_report
from hydranet.train.run import foreign_entries, run_training, same_run_config
from hydranet.world import generate

# The promise: fresh clone -> demo done, install and rendering included, on an idle 2-core machine.
BUDGET_S = 600
_PHASES = ("install", "render", "train", "eval", "pictures")
REPO = Path(__file__).resolve().parents[2]


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


def materialise_shards(cfg: Config, data_dir: Path, console: Console, workers: int = 2,
                       only: Collection[str] | None = None) -> Config:
    """Render world datasets to shards under ``data_dir/<name>`` (or reuse them, saying so) with a progress bar
    each, and return the config pointing at the shards. ``only``: the names to render (``"eval"`` for the held-out
    set, a ``data.datasets`` name otherwise); the others are left as configured. None: every world dataset."""
    tree = config_to_dict(cfg)
    sources = dict(tree["data"]["datasets"])
    if tree["data"].get("eval"):
        sources["eval"] = tree["data"]["eval"]
    for name, ds in sources.items():
        if ds["kind"] != "world" or (only is not None and name not in only):
            continue
        out = data_dir / name
        world = world_config(cfg, name)
        t0 = time.perf_counter()
        with progress(f"render {name}", ds["frames"], console, unit="frames", transient=True) as bar:
            try:
                result = generate(out, world, frames=ds["frames"], workers=workers, progress=bar.update)
            except ShardError as e:  # data from another config or version: the demo owns OUT/data
                console.print(f"  {e}: rendering again")
                result = generate(out, world, frames=ds["frames"], workers=workers, overwrite=True, progress=bar.update)
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


def _check_train_dir(train_dir: Path) -> None:
    """``FileExistsError`` naming ``--out`` when ``OUT/train`` holds files a run does not write: the demo replaces
    its own earlier run there (a changed config, ``--retrain``), never a user's files."""
    foreign = foreign_entries(train_dir)
    if foreign:
        raise FileExistsError(f"--out {train_dir.parent}: its train/ folder holds files a run does not write "
                              f"({', '.join(foreign[:3])}): move them or choose another --out")


def _rendered_after(cfg: Config, run_config: Path) -> list[str]:
    """The shard directories of ``cfg`` whose ``manifest.json`` is newer than ``run_config`` (the run's
    ``config.yaml``, written when it started): data rendered again after the run began, as when a world file the
    demo config names was edited. The run's config names the shards by path, so only the time tells."""
    started = run_config.stat().st_mtime
    sources = [*cfg.data.datasets.values(), *([cfg.data.eval] if cfg.data.eval is not None else [])]
    manifests = [Path(ds.path) / "manifest.json" for ds in sources if ds.kind == "shards" and ds.path]
    return [str(m.parent) for m in manifests if m.is_file() and m.stat().st_mtime > started]


def _train_or_reuse(cfg: Config, train_dir: Path, retrain: bool, console: Console) -> tuple[dict[str, Any], int]:
    """The training summary of the run in ``train_dir`` and the step it started from: reused when finished
    with the same config and data, resumed when interrupted, trained afresh when the config changed, the data
    were rendered again after the run started, or ``retrain``.
    ``run_demo`` has refused a ``train_dir`` holding anything a run does not write (``_check_train_dir``), so
    the directory deleted here is the demo's own earlier run."""
    saved = train_dir / "config.yaml"
    changed = saved.is_file() and not same_run_config(saved, cfg)
    newer = _rendered_after(cfg, saved) if saved.is_file() and not changed else []
    if (retrain or changed or newer) and train_dir.exists():
        if changed and not retrain:
            console.print(f"  the config differs from the run in {train_dir}: training afresh")
        elif newer and not retrain:
            console.print(f"  the data in {', '.join(newer)} were rendered after the run in {train_dir} (a world "
                          "changed): training afresh")
        shutil.rmtree(train_dir)
    if _finished(train_dir):
        console.print(f"  reusing the finished training run in {train_dir} (--retrain trains again)")
        summary = json.loads((train_dir / "train_summary.json").read_text())
        return summary, summary.get("steps") or 0
    latest = train_dir / "checkpoints" / "latest.json"
    start = _checkpoint_step(latest)
    # The demo's own run of this config, stopped early, is continued (from step 0 before its first checkpoint).
    return run_training(cfg, train_dir, resume=saved.is_file(), console=console), start


def _checkpoint_step(latest: Path) -> int:
    """The step of the checkpoint ``latest.json`` points at (0 when there is none or it cannot be read)."""
    try:
        return int(json.loads(latest.read_text()).get("step", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _stream_video(model: Any, eval_set: Any, n_eval: int, out: Path, console: Console) -> None:
    """A temporal model: stream the held-out scenes through its memory, write ``out/video.json`` and print
    the objects3d video figures (mAP, mAVE, occluded recall, flicker)."""
    with working("streaming the held-out scenes through the video memory", console):
        video = evaluate_clips(model, eval_set, scene_runs(eval_set, n_eval), list(model.task_objects))
    write_json(out / "video.json", video)
    o = video.get("objects3d", {})

    def shown(key: str, digits: int) -> str:  # an undefined figure (no match, no track) is n/a, as in video.json
        value = o.get(key)
        return "n/a" if value is None or value != value else f"{value:.{digits}f}"

    console.print(f"  video (streamed): objects3d mAP {shown('map', 3)}  mAVE {shown('ave', 2)} m/s"
                  f"  occluded recall {shown('occluded_recall', 3)}  flicker {shown('flicker', 3)}"
                  f" -> {out / 'video.json'}")


def _reference_run(config: Path) -> dict[str, Any] | None:
    """The reference run of ``config`` (``docs/results/demo.json`` of the source tree: the ``metrics.json`` of
    a ``make demo`` run, committed with the README figures rendered from it), or None when there is none or
    it ran another config (``--temporal``'s steps cost more: its rates would not compare)."""
    path = REPO / "docs" / "results" / "demo.json"
    try:
        ref = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ran = Path(str(ref.get("meta", {}).get("config", ""))).name
    return ref if ran == Path(config).name else None


# ``make demo`` starts the demo as soon as its install has finished: an install older than this was not this run's.
_INSTALL_JUST_BEFORE_S = 60.0


def _install_seconds() -> float | None:
    """Seconds ``make`` spent creating this virtual environment (``<venv>/install_seconds``) when that install
    finished just before this demo started (``make demo`` on a fresh clone), else None: a later run installed
    nothing, and counting the old install again would misstate its fresh-clone time."""
    record = Path(sys.prefix) / "install_seconds"
    try:
        if time.time() - record.stat().st_mtime > _INSTALL_JUST_BEFORE_S:
            return None
        return float(record.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _reference_rate(ref: dict[str, Any] | None) -> float | None:
    """Training steps per second of the reference run (None without one, or when it reused its training)."""
    if not ref:
        return None
    meta = ref.get("meta", {})
    steps, secs = meta.get("train_steps_run"), (meta.get("seconds") or {}).get("train")
    return steps / secs if steps and secs else None


def _print_budget(console: Console, ref: dict[str, Any] | None, machine: Machine, cfg: Config) -> str | None:
    """The promise, the reference run's split by phase, this machine, and a warning if it is busy already;
    returns why it is busy (``Machine.busy_reason``), or None."""
    console.print(f"  budget: <= {BUDGET_S / 60:.0f} minutes from a fresh clone on an idle 2-core machine "
                  f"({' + '.join(_PHASES)}); {cfg.train.steps} training steps, the same on every machine")
    if ref:
        meta = ref.get("meta", {})
        secs, where = meta.get("seconds") or {}, meta.get("machine") or {}
        split = ", ".join(f"{k} {secs[k]:.0f} s" for k in _PHASES if secs.get(k) is not None)
        console.print(f"  reference run (docs/results/demo.json, {where.get('cpus')} CPUs {where.get('cpu')}): "
                      f"{split}; " + (f"fresh clone to done {secs['fresh_clone']:.0f} s" if secs.get("fresh_clone")
                                   else f"the demo {secs.get('total') or 0:.0f} s (its install was not timed)"))
    else:
        console.print("  no reference run of this config (docs/results/demo.json): the ETAs come from this run's "
                      "own rates")
    console.print(f"  this machine: {machine.cpus} CPUs {machine.model}")
    reason = machine.busy_reason(own_threads=0)
    if reason:
        console.print(f"  [yellow]the machine is busy before the demo starts[/] ({reason}): expect it to take "
                      "longer than its budget; the numbers will be the same")
    return reason


class _TrainWatch:
    """While training runs: reads ``train_log.jsonl`` every ``every_s`` seconds and, once, says when the step
    rate is below ``SLOW_SHARE`` of the reference run's, with the machine's load as the likely reason."""

    def __init__(self, train_dir: Path, cfg: Config, expected: float | None, machine: Machine, console: Console,
                 every_s: float = 15.0) -> None:
        self.log, self.cfg, self.expected, self.machine, self.console = (train_dir / "train_log.jsonl", cfg,
                                                                         expected, machine, console)
        self.every_s, self.warned, self.rate = every_s, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo train watch", daemon=True)

    def __enter__(self) -> _TrainWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            rate = self._steps_per_s()
            if rate is None:
                continue
            self.rate = rate
            if self.warned is None and slower_than_expected(rate, self.expected):
                self.warned = self._busy_line(rate)
                self.console.print(f"[yellow]busy:[/] {self.warned}", soft_wrap=True)

    def _steps_per_s(self) -> float | None:
        """Steps per second over the last logging window (``samples_per_s`` / global batch), or None."""
        try:
            lines = self.log.read_text().splitlines()
        except OSError:
            return None
        records = [json.loads(x) for x in lines[-3:] if '"samples_per_s"' in x]
        if not records or not records[-1].get("samples_per_s"):
            return None
        return records[-1]["samples_per_s"] / (self.cfg.train.batch_size * self.cfg.train.grad_accum)

    def _busy_line(self, rate: float) -> str:
        reason = self.machine.busy_reason(own_threads=(self.cfg.train.threads or 1) + self.cfg.train.num_workers)
        left = self.cfg.train.steps / rate
        return (f"training runs at {rate:.2f} steps/s, {self.expected / rate:.1f}x slower than the reference run "
                f"({self.expected:.2f} steps/s): {reason or 'this machine is slower than the reference, or busy'}; "
                f"training will take about {left / 60:.0f} min instead of "
                f"{self.cfg.train.steps / self.expected / 60:.0f} (same steps, same numbers)")


def run_demo(out: Path, config: Path | None = None, overrides: list[str] | None = None, retrain: bool = False,
             pictures: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """``hydranet demo``: render the data, train (reuse or resume a run in ``out``), evaluate trained vs untrained
    on the held-out frames, draw pictures, write ``metrics.md``/``metrics.json`` (module docstring).

    Returns ``{"metrics", "baseline", "pictures", "summary", "meta"}``. Raises ``ConfigError`` for a bad config or
    a ``train.time_limit_s`` (the demo's numbers must not depend on machine speed), ``ValueError`` without
    ``data.eval``.
    """
    console = console or make_console()
    t_start = time.perf_counter()
    config = config or default_demo_config()
    cfg = load_config(config, overrides)
    run_config = config_to_dict(cfg)  # before the worlds become shards: what the README describes
    if cfg.train.time_limit_s is not None:
        raise ConfigError(f"{config}: train.time_limit_s: the demo does a fixed amount of work on every machine "
                          "(its numbers must not depend on the machine's speed); remove the time limit")
    if cfg.data.eval is None:
        raise ValueError(f"{config}: the demo needs data.eval (held-out frames)")
    resolve_device(cfg.train.device, "train.device")  # before minutes of rendering: one this machine lacks is refused
    _check_train_dir(out / "train")  # and a user's files where the run goes
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    machine, ref = Machine.here(), _reference_run(config)
    console.print(f"[bold]hydranet demo[/] config {config} -> {out}")
    busy_at_start = _print_budget(console, ref, machine, cfg)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float | None] = {"install": _install_seconds()}

    t0 = time.perf_counter()
    cfg = materialise_shards(cfg, out / "data", console)
    seconds["render"] = time.perf_counter() - t0

    train_dir = out / "train"
    t0 = time.perf_counter()
    with _TrainWatch(train_dir, cfg, _reference_rate(ref), machine, console) as watch:
        summary, step_before = _train_or_reuse(cfg, train_dir, retrain, console)
    seconds["train"] = time.perf_counter() - t0
    steps_run = (summary.get("steps") or 0) - step_before
    if not steps_run:  # a finished run reused: its own training time, not this run's check that it is done
        seconds["train_reused_run"] = summary.get("seconds")

    t0 = time.perf_counter()
    model, _ = load_model(train_dir)
    tasks = model.task_objects
    eval_set = open_source(cfg.data.eval, sorted({t.label for t in tasks.values()}))
    n_eval = len(eval_set) if cfg.eval.frames is None else min(cfg.eval.frames, len(eval_set))
    max_batches = -(-n_eval // cfg.eval.batch_size)
    with progress("eval trained", n_eval, console, unit="frames", transient=True) as bar:
        results = evaluate(model, dataset_batches(eval_set, cfg.eval.batch_size, max_batches), tasks,
                           on_frame=lambda f: bar.advance())
    torch.manual_seed(cfg.train.seed)  # the same initialisation the training run started from
    untrained = create_model(cfg.resolved_model()).eval()
    with progress("eval untrained (the baseline)", n_eval, console, unit="frames", transient=True) as bar:
        baseline = evaluate(untrained, dataset_batches(eval_set, cfg.eval.batch_size, max_batches),
                            on_frame=lambda f: bar.advance())
    seconds["eval"] = time.perf_counter() - t0
    console.print(f"  evaluated the trained and the untrained network on {n_eval} held-out frames "
                  f"in {seconds['eval']:.0f} s")

    t0 = time.perf_counter()
    n_pic = cfg.eval.pictures if pictures is None else pictures
    indices, missing = choose_frames(eval_set, n_eval, n_pic, model.setup)
    grid = model.setup.grid
    paths: list[Path] = []
    with progress("pictures", len(indices), console, unit="frames", transient=True) as bar:
        for i in indices:
            paths += draw_predictions(model, tasks, eval_set, [i], grid, out / "pictures")
            bar.advance()
    combined = [p for p in paths if p.stem.count("_") == 1]
    depth = [p for p in paths if p.stem.endswith("_depth")][:1]
    sheet = contact_sheet(combined + depth, out / "demo.png") if combined else None
    seconds["pictures"] = time.perf_counter() - t0
    shown = f"frames {indices} show every object class and light state" if not missing else \
        f"frames {indices}; no held-out frame shows {', '.join(sorted(missing))}"
    console.print(f"  pictures: {shown} ({seconds['pictures']:.0f} s)")

    if getattr(model, "is_temporal", False):  # video: stream the held-out scenes through the memory
        t0 = time.perf_counter()
        _stream_video(model, eval_set, n_eval, out, console)
        seconds["video"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    seconds["fresh_clone"] = seconds["total"] + (seconds["install"] or 0) if seconds["install"] else None
    # Busy at the end, while training, or when it started: any of them explains a budget overrun.
    busy = machine.busy_reason(own_threads=0) or watch.warned or busy_at_start
    meta = {"config": _shown(config), "eval_frames": n_eval, "device": "cpu", "threads": torch.get_num_threads(),
            "global_batch": cfg.train.batch_size * cfg.train.grad_accum, "budget_s": BUDGET_S, "seconds": seconds,
            "train_steps_run": steps_run, "train_steps_per_s": steps_run / seconds["train"] if steps_run else None,
            "machine": machine.describe(), "busy": busy, "pictures": {"frames": indices, "missing": sorted(missing)},
            "torch": torch.__version__, "parameters": sum(p.numel() for p in model.parameters()),
            "run_config": run_config, "temporal": bool(getattr(model, "is_temporal", False))}
    md, js = write_metrics_report(out, results, baseline, tasks, summary, meta)
    console.print()
    console.print(md.read_text(), soft_wrap=True, markup=False)
    _print_done(console, seconds, summary, busy)
    console.print(f"  metrics     {md}  {js}")
    console.print(f"  pictures    {out / 'pictures'}/ ({len(paths)} files), overview {sheet}")
    console.print(f"  checkpoint  {summary.get('checkpoint')}  (hydranet.checkpoint.load_model)")
    console.print(f"  tensorboard tensorboard --logdir {train_dir / 'tb'}")
    return {"metrics": results, "baseline": baseline, "pictures": [str(p) for p in paths], "summary": summary,
            "meta": meta}


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (``configs/demo.yaml``)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _print_done(console: Console, seconds: dict[str, float | None], summary: dict[str, Any], busy: str | None) -> None:
    """The closing line: total time, the split by phase, and whether the budget was kept (and if not, why)."""
    split = ", ".join(f"{k} {seconds[k]:.0f} s" for k in (*_PHASES, "video") if seconds.get(k) is not None)
    whole = seconds["fresh_clone"] or seconds["total"]
    within = "within" if whole <= BUDGET_S else "over"
    why = "" if whole <= BUDGET_S else (f": the machine was busy ({busy})" if busy else
                                        ": this machine is slower than the reference 2-core machine")
    console.print(f"[bold green]demo done[/] in {seconds['total']:.0f} s ({split}; "
                  f"training {summary.get('steps')}/{summary.get('planned_steps')} steps) - {within} its "
                  f"{BUDGET_S / 60:.0f}-minute budget{' from a fresh clone' if seconds['fresh_clone'] else ''}{why}")
