"""CLI of the data engine: ``hydranet mine``, ``hydranet label``, ``hydranet autolabel-quality``,
``hydranet vacation``.

Exit codes: 0 = done; 1 = ``vacation``: an iteration's gate failed (nothing promoted); 2 = bad input
(missing model/pool/config/suite, unknown trigger, bad option), reported as one ``error:`` line
(``hydranet.cli.errors``). ``vacation`` checks every path of the pipeline before its first stage.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hydranet.cli.app import CHECKPOINT_HELP, app
from hydranet.cli.errors import cli_errors, fail
from hydranet.cli.gate_table import print_gate
from hydranet.cli.quality_view import quality_tables
from hydranet.console import Progress, make_console, progress, working
from hydranet.deploy import DeployedModel
from hydranet.engine import (
    AutoLabelConfig,
    MineResult,
    PoolError,
    TriggerError,
    Vacation,
    autolabel_items,
    autolabel_quality,
    build_triggers,
    describe_current,
    env_world_size,
    load_mining_model,
    load_pipeline,
    mine,
    model_tasks,
    open_pool,
    oracle_items,
    parse_trigger_specs,
    preflight,
    queue_summary,
    read_current,
    read_queue,
    write_labelled,
    write_queue,
    write_queue_html,
)
from hydranet.eval import GateRow, spread_evenly
from hydranet.json_files import dumps
from hydranet.outputs import StagedDirectory
from hydranet.train import shutdown

console = make_console(stderr=True)  # plain, unwrapped lines in logs and pipes

_TRIGGERS_HELP = ("comma-separated triggers, each name[*weight][:key=value;...], e.g. "
                 "'entropy:task=drivable,light_margin*2,flicker,condition:name=night'; an unknown name lists the "
                 "registered triggers (docs/engine.md describes each)")

# What `mine` writes into its OUT (an earlier queue holding only these may be replaced with --overwrite).
_QUEUE_FILES = ("queue.jsonl", "queue.html", "mine_summary.json", "queue.parquet")


def _opened(option: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` (``open_pool``, ``load_mining_model``, the trigger parsers); a ``PoolError`` or
    ``TriggerError`` names ``option`` before its message: ``--model runs/x: not a checkpoint ...``,
    ``--triggers: unknown trigger 'x' ...``."""
    try:
        return fn(*args)
    except (PoolError, TriggerError) as e:
        raise type(e)(f"{option} {e}") from None


def _counted(items: Iterator[Any], bar: Progress) -> Iterator[Any]:
    """``items`` unchanged, advancing ``bar`` by one per item (labelling is a generator of frames)."""
    for item in items:
        yield item
        bar.advance()


@app.command("mine")
def mine_command(
    model: Path = typer.Option(..., "--model", "-m", help=CHECKPOINT_HELP + ", or an exported model.onnx"),
    data: str = typer.Option(..., "--data", help="the unlabelled pool: shard dir, manifest, 'synthetic[:world.yaml]'"),
    triggers: str = typer.Option("entropy:task=drivable,light_margin,flicker", "--triggers", "-t",
                                 help=_TRIGGERS_HELP),
    budget: int = typer.Option(..., "--budget", "-b", min=1, help="frames to queue for labelling"),
    out: Path = typer.Option(..., "--out", "-o", help="new queue directory (queue.jsonl, queue.html, "
                             "mine_summary.json)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier queue in OUT (one holding "
                                   "queue.jsonl and nothing but the queue's own files)."),
    shadow: Path | None = typer.Option(None, "--shadow", help="deployed graph (model.onnx) for the shadow trigger"),
    oversample: int = typer.Option(4, min=1, help="candidates kept per queued frame for near-duplicate removal"),
    radius: float | None = typer.Option(None, min=0.0, help="near-duplicate radius on the L2-normalised "
                                        "embeddings, 0..2: a candidate closer than this to a pick is discounted "
                                        "(default: auto, the median distance of a candidate to its nearest other "
                                        "candidate)"),
    limit: int | None = typer.Option(None, min=1, help="mine only the first N frames of the pool"),
    max_per_scene: int | None = typer.Option(None, min=1, help="queue at most N frames of one scene "
                                             "(default: no cap; near-duplicates are still spread apart)"),
    batch_size: int = typer.Option(4, min=1, help="frames per forward pass of the model over the pool"),
    workers: int = typer.Option(0, min=0, help="DataLoader worker processes reading the pool"),
    parquet: bool = typer.Option(False, help="also write queue.parquet (needs pyarrow)"),
    html_frames: int = typer.Option(60, min=0, help="picks shown with thumbnails in queue.html"),
    threads: int = typer.Option(1, min=0, help="torch compute threads per process (0 = torch's default)"),
) -> None:
    """Mine an unlabelled pool for frames worth labelling (works under torchrun: ranks split the pool).

    OUT is written whole or not at all, and checked before the pool is read: an existing non-empty OUT is refused
    unless it is an earlier queue and --overwrite is given."""
    import torch
    import torch.distributed as dist

    if threads:
        torch.set_num_threads(threads)

    if parquet:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise typer.BadParameter("pyarrow is not installed; drop --parquet (queue.jsonl is always written)",
                                     param_hint="--parquet") from None
    with cli_errors():  # PoolError/TriggerError/ShardError... -> one `error:` line, exit 2
        specs = _opened("--triggers:", parse_trigger_specs, triggers)
        net = _opened("--model", load_mining_model, model)
        pool = _opened("--data", open_pool, data)
        trigs = _opened("--triggers:", build_triggers, specs, model_tasks(net))
        deployed = _shadow_model(shadow, trigs)
        # Rank 0 writes the queue: its OUT is checked before minutes of mining, never half-written or replaced.
        stage = StagedDirectory(out, overwrite, marker="queue.jsonl", owned=lambda _: set(_QUEUE_FILES)) \
            if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        if env_world_size() > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        rank = dist.get_rank() if dist.is_initialized() else 0
        # cli_errors: a corrupt shard read mid-pool is one error line naming file/sample, exit 2
        with progress(f"mine (rank {rank})", None, console, unit="frames") as bar, cli_errors():
            result = mine(net, pool, trigs, budget, oversample=oversample, batch_size=batch_size,
                          num_workers=workers, radius=radius, shadow=deployed, limit=limit,
                          max_per_scene=max_per_scene, on_progress=bar.update)
        if dist.is_initialized():
            shutdown()
        if result is None:  # a rank other than 0: rank 0 writes the merged queue
            return
        names = [n for n, _, _ in specs]
        settings = {"triggers": triggers, "oversample": oversample, "radius": radius, "limit": limit,
                    "max_per_scene": max_per_scene}
        summary = queue_summary(result, data, str(model), names, budget, settings)
        with cli_errors():  # a full disk: one error line naming the file
            write_queue(stage.path, result, summary, parquet)
            if html_frames:
                write_queue_html(stage.path / "queue.html", result.queue, pool, summary, html_frames)
    except BaseException as e:
        if stage is not None:
            stage.abandon(e)
        raise
    stage.commit()
    _print_mine_result(result, out / "queue.jsonl", budget, max_per_scene)


def _shadow_model(shadow: Path | None, trigs: list) -> DeployedModel | None:
    """The deployed graph ``--shadow`` names, loaded when given or when a trigger compares against it;
    ``TriggerError`` when a trigger needs it and it is missing, one error line when it does not load."""
    if shadow is None and not any(t.needs_shadow for t, _ in trigs):
        return None
    if shadow is None:
        raise TriggerError("trigger 'shadow' needs --shadow model.onnx (the deployed graph)")
    try:
        return DeployedModel(shadow)
    except (FileNotFoundError, ValueError) as e:
        raise fail(f"--shadow {shadow}: {e}") from None


def _print_mine_result(result: MineResult, queue_file: Path, budget: int, max_per_scene: int | None) -> None:
    """Frames scored, ranks, seconds, the queue file (and why it is shorter than the budget); trigger failures
    and their first messages."""
    failed = {k: v for k, v in result.errors.items() if v}
    short = ""
    if len(result.queue) < budget:
        why = f"at most {max_per_scene} per scene and " if max_per_scene else ""
        short = f" (fewer than the budget of {budget}: {why}the candidates kept ran out)"
    console.print(f"[bold]hydranet mine[/]: {result.frames} frames scored on {result.world_size} rank(s) in "
                  f"{result.seconds:.1f} s; queued {len(result.queue)}{short} -> {queue_file}")
    if failed:
        console.print(f"[yellow]trigger failures (frames still scored by the others): {failed}[/]")
        for m in result.error_messages[:5]:
            console.print(f"  {m}")


@app.command("label")
def label_command(
    queue: Path = typer.Option(..., "--queue", "-q", help="queue directory or queue.jsonl from `hydranet mine`"),
    data: str = typer.Option(..., "--data", help="the pool the queue was mined from (with ground truth for oracle)"),
    labeller: str = typer.Option("oracle", "--labeller", "-l", help="oracle (world ground truth) or auto (teacher)"),
    out: Path = typer.Option(..., "--out", "-o", help="new shard directory for the labelled frames"),
    teacher: Path | None = typer.Option(None, "--teacher", help="auto: the teacher: " + CHECKPOINT_HELP),
    min_confidence: float = typer.Option(0.3, min=0.0, max=1.0, help="auto: drop boxes/lights below this"),
    clip_radius: int = typer.Option(20, min=0, help="auto: frames before/after each frame the teacher sees"),
    smoothing: bool = typer.Option(True, "--smoothing/--no-smoothing", help="auto: smooth the teacher's labels "
                                   "over the clip (tracking, voting); --no-smoothing keeps single-frame labels"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a labelled dataset already in OUT."),
) -> None:
    """Label a mining queue into a shard directory (+ labels.jsonl: cost, provenance, confidence)."""

    if labeller not in ("oracle", "auto"):
        raise typer.BadParameter(f"'{labeller}': choose oracle or auto", param_hint="--labeller")
    if labeller == "auto" and teacher is None:
        raise typer.BadParameter("auto-labelling needs --teacher CKPT", param_hint="--teacher")
    # QueueError names queue file:line, PoolError its option and path, LabelError/ShardError the sample: one
    # `error:` line each, exit 2
    with cli_errors():
        rows = read_queue(queue)
        pool = _opened("--data", open_pool, data, True)
        if labeller == "oracle":
            items = oracle_items(rows, pool)
        else:
            cfg = AutoLabelConfig(min_confidence=min_confidence, clip_radius=clip_radius, smoothing=smoothing)
            items = autolabel_items(rows, pool, _opened("--teacher", load_mining_model, teacher), str(teacher), cfg)
        with progress(f"label ({labeller})", len(rows), console, unit="frames") as bar:
            res = write_labelled(out, _counted(items, bar), pool, {"labeller": labeller, "queue": str(queue),
                                                                   "pool": data}, overwrite=overwrite)
    console.print(f"[bold]hydranet label[/] ({labeller}): {res['frames']} frames -> {out}; cost {res['cost']}")


@app.command("autolabel-quality")
def autolabel_quality_command(
    teacher: Path = typer.Option(..., "--teacher", help="the teacher: " + CHECKPOINT_HELP),
    data: str = typer.Option(..., "--data", help="frames with ground truth (e.g. 'synthetic:world.yaml')"),
    frames: int = typer.Option(16, min=1, help="frames scored, spread evenly over the source"),
    clip_radius: int = typer.Option(10, min=0, help="frames before/after each scored frame the teacher sees "
                                    "(the clip its labels are smoothed over)"),
    min_confidence: float = typer.Option(0.1, min=0.0, max=1.0, help="drop the teacher's boxes/lights below this "
                                         "score"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the JSON here too"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON on stdout instead of the tables"),
) -> None:
    """Auto-label quality against ground truth, the teacher's own outputs vs single-frame vs clip-smoothed labels:
    a table per task on stdout (--json: the full JSON, per-class numbers included, for machines)."""
    with cli_errors():  # one `error:` line naming the option and the path, exit 2
        pool = _opened("--data", open_pool, data, True)
        model = _opened("--teacher", load_mining_model, teacher)
    idx = spread_evenly(frames, len(pool))
    with cli_errors(), working(f"auto-labelling {len(idx)} frames and scoring them", console):
        res = autolabel_quality(model, pool, idx, AutoLabelConfig(clip_radius=clip_radius,
                                                                  min_confidence=min_confidence,
                                                                  min_score=min_confidence))
    text = dumps(res)  # NaN (undefined on these frames) -> null: standard JSON
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    if as_json:
        typer.echo(text)
        return
    stdout = make_console()
    for table in quality_tables(res, str(teacher)):
        stdout.print(table)
    if out is not None:
        console.print(f"wrote {out}")


def _print_gate_record(it: int, stage: str, rec: dict[str, Any]) -> None:
    """After a vacation's gate stage: its record's rows, one table per suite, as ``hydranet gate`` prints them."""
    if stage != "gate":
        return
    for suite, d in rec["suites"].items():
        print_gate(console, suite, [GateRow(**r) for r in d["rows"]], frames=d.get("frames", 0),
                   resamples=d.get("resamples", 0), confidence=d.get("confidence", math.nan),
                   names=("current", "candidate"), more_frames="eval.frames in the pipeline")


@app.command("vacation")
def vacation_command(
    config: Path = typer.Option(..., "--config", "-c", help="pipeline.yaml (see docs/engine.md)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory; re-run the same command to resume"),
    iterations: int | None = typer.Option(None, min=1, help="override the pipeline's iterations"),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a pipeline field, e.g. --set mine.budget=8 "
                                   "--set train.steps=50 (repeatable; the value is YAML; a relative path is the "
                                   "working directory's). Re-run with the same --set to resume."),
    threads: int = typer.Option(1, min=0, help="torch compute threads (0 = torch's default)"),
) -> None:
    """Operation Vacation: mine → label → dataset → train → eval → gate → export → promote, resumable.

    Exits 1 when the last iteration's gate failed (nothing promoted), 2 on bad input."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    with cli_errors():  # PipelineError, PoolError, SuiteError, ShardError...: one `error:` line, exit 2
        pipe = load_pipeline(config, set_)
        if iterations is not None:
            pipe = pipe.model_copy(update={"iterations": iterations})
        promoted = read_current(out)  # a resumed run mines with its promoted model, not the pipeline's
        preflight(pipe, promoted["checkpoint"] if promoted else None)  # every reference, before any stage runs
        loop = Vacation(pipe, out, log=lambda s: console.print(f"[bold]vacation[/] {escape(s)}"))
        with working("vacation (all stages)", console, every_s=30.0):  # a line at least every 30 s in a log
            rows = loop.run(on_record=_print_gate_record)
    last = rows[-1] if rows else {}
    console.print(f"history: {out / 'history.jsonl'} · {out / 'history.html'}")
    console.print(f"current model: {escape(describe_current(loop.current()))}")
    if last.get("gate_passed") is False:
        console.print("[bold red]last iteration not promoted[/]: " + "; ".join(
            f"suite {f['suite']}: {f['task']}.{f['metric']} {f['reason']}" for f in last["gate_failures"]))
        raise typer.Exit(1)
