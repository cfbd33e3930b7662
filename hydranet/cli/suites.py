"""CLI commands on evaluation suites: ``hydranet eval`` (suites, or any dataset with ``--data``), ``hydranet gate``,
``hydranet report``.

Exit codes: 0 = every threshold passes / no regression (``eval --data``: scored); 1 = a threshold failed or a
task regressed; 2 = bad input (missing checkpoint, invalid suite file, unknown metric name, data that does not
fit the model).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hydranet.checkpoint import CheckpointError, load_model
from hydranet.cli.app import CHECKPOINT_HELP, DATA_HELP, DEVICE_HELP, app
from hydranet.cli.errors import cli_errors
from hydranet.cli.gate_table import print_gate
from hydranet.console import make_console, progress, working
from hydranet.datasets import open_data_option
from hydranet.eval import (
    SuiteError,
    TrackerOptions,
    check_suite,
    check_thresholds,
    evaluate_dataset,
    gate,
    load_suites,
    run_suite,
    run_to_json,
    select_tasks,
    tracks_objects,
    unknown_dead_cameras,
    write_html_report,
)
from hydranet.json_files import dumps, to_jsonable
from hydranet.metrics import TEMPORAL_KEYS_3D
from hydranet.train import resolve_device

_SEQUENCE_METRICS = ("ave", *TEMPORAL_KEYS_3D)  # shown for every task that reports them, threshold or not

console = make_console()

_SUITE_HELP = "a suite YAML file or a directory of them"


def _fmt(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _device(device: str | None) -> str:
    """``--device`` checked to run here, before any work (``hydranet.train.resolve_device``)."""
    return str(resolve_device(device, "--device"))


def _load(path: Path, device: str, option: str = "CHECKPOINT") -> Any:
    """The model at ``path``; a bad checkpoint is one error naming ``option`` (the argument or option it came
    from: ``CHECKPOINT``, ``--baseline``, ``--candidate``)."""
    try:
        model, _ = load_model(path, device=device)
    except (CheckpointError, OSError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint=option) from None
    return model


# The --track option of eval, gate and report: one help text, one check.
_TRACK_HELP = ("video suites (sequence:): track objects3d boxes over each clip; the tracks' velocity and scores "
               "replace the velocity head's and each box's (docs/eval.md)")


def _tracking(track: bool, suites: list[Any], model_tasks: Any) -> tuple[TrackerOptions | None, list[str]]:
    """``(TrackerOptions or None, names of the suites tracked)`` for ``--track``; ``typer.BadParameter`` when no
    suite streams clips that score ``objects3d``, a head of the model (there is nothing to track). Says which."""
    if not track:
        return None, []
    tracked = [s.name for s in suites if tracks_objects(s, model_tasks)]
    if not tracked:
        raise typer.BadParameter("no suite streams clips (sequence:) and scores objects3d, a head of this model: "
                                 "there is nothing to track", param_hint="--track")
    console.print(f"--track: objects3d boxes tracked over each clip of {', '.join(tracked)}; their `ave` (mAVE) "
                  "scores the tracks' velocity, their mAP, flicker and occluded recall the tracks' scores"
                  + ("" if len(tracked) == len(suites) else
                     " (the other suites score single frames: nothing to track)"))
    return TrackerOptions(), tracked


def _suites(path: Path) -> list[Any]:
    try:
        return load_suites(path)
    except SuiteError as e:
        raise typer.BadParameter(str(e), param_hint="--suite") from None


def _checked(suites: list[Any], models: dict[str, Any], default: bool) -> list[Any]:
    """``suites`` checked against ``models`` before any is run (``check_suite``): a suite that cannot run for them is
    an error naming it (exit 2), not a failure after the suites before it. From the default directory (``default``),
    a suite that blacks out cameras the models' rig does not have (``suites/dead_camera.yaml``'s 'main' on an own
    rig) is left out with a note: it cannot be asked of that rig."""
    kept = []
    setup = getattr(next(iter(models.values())), "setup", None)
    names = [c.name for c in setup.rig().cameras] if setup is not None else None
    for s in suites:
        unknown = unknown_dead_cameras(s, names) if names is not None else []
        if default and unknown:
            console.print(f"skipped suite {s.name} ({s.path}): its dead_cameras {unknown} are not cameras of the "
                          f"model's rig {names}")
            continue
        try:
            check_suite(s, models)
        except SuiteError as e:
            raise typer.BadParameter(str(e), param_hint="--suite") from None
        kept.append(s)
    if not kept:
        raise typer.BadParameter("no suite applies to this model's rig", param_hint="--suite")
    return kept


def _run(models: dict[str, Any], suites: list[Any], device: str, batch_size: int, frames: int | None,
         tracking: TrackerOptions | None = None) -> list[Any]:
    """Run every suite with a progress bar; returns ``[{label: SuiteRun}]`` per suite."""
    out = []
    for suite in suites:
        with progress(f"suite {suite.name}", None, console, unit="frames") as bar:
            try:
                runs = run_suite(models, suite, device=device, batch_size=batch_size, frames=frames,
                                 on_batch=bar.update, tracking=tracking)
            except SuiteError as e:
                raise typer.BadParameter(str(e), param_hint="--suite") from None
        out.append(runs)
    return out


def _write_json(path: Path | None, data: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(data, indent=2))
    tmp.replace(path)
    console.print(f"wrote {path}")


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    suite: Path | None = typer.Option(None, "--suite", "-s", help=_SUITE_HELP + " (default: suites)"),
    data: str | None = typer.Option(None, "--data", "-d", help="instead of suites: score the model on any dataset "
                                    "with every task's metric, no thresholds — " + DATA_HELP + "; opened for the "
                                    "model's setup (a world renders it unless the file declares its own)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the results as JSON here"),
    frames: int | None = typer.Option(None, "--frames", "-n", min=1,
                                      help="frames per (scenario, seed), overriding each suite's 'frames'; with "
                                      "--data: the first N frames (default: all)"),
    batch_size: int = typer.Option(4, min=1, help="frames per forward pass"),
    device: str | None = typer.Option(None, help=DEVICE_HELP),
    allow_missing_tasks: bool = typer.Option(False, "--allow-missing-tasks", help="skip (instead of failing) "
                                             "thresholds on tasks the model has no head for; --tasks evaluates "
                                             "a subset instead"),
    tasks: str | None = typer.Option(None, "--tasks", help="comma-separated tasks to evaluate (default: every task "
                                     "of the suites)"),
    track: bool = typer.Option(False, "--track", help=_TRACK_HELP),
) -> None:
    """Evaluate a checkpoint on evaluation suites: a pass/fail table per suite and task; or, with --data, on any
    dataset: every task's metrics on the frames that carry its label.

    Exits 1 when any threshold fails (usable as a CI gate), 2 on bad input.
    """

    dev = _device(device)
    if data is not None:
        if suite is not None:
            raise typer.BadParameter("--suite and --data exclude each other: suites render their own frames",
                                     param_hint="--data")
        if allow_missing_tasks:
            raise typer.BadParameter("applies to suites' thresholds; with --data, --tasks chooses the heads",
                                     param_hint="--allow-missing-tasks")
        if track:
            raise typer.BadParameter("tracking follows boxes over a suite's clips (sequence:); --data scores single "
                                     "frames", param_hint="--track")
        _eval_data(checkpoint, data, out, frames, batch_size, dev, tasks)
        return
    suites = _suites(suite or Path("suites"))
    if tasks:
        try:
            suites = select_tasks(suites, [t.strip() for t in tasks.split(",") if t.strip()])
        except SuiteError as e:
            raise typer.BadParameter(str(e), param_hint="--tasks") from None
    model = _load(checkpoint, dev)
    suites = _checked(suites, {"model": model}, default=suite is None)
    results, failed, skipped = [], 0, 0
    tracking, tracked = _tracking(track, suites, model.task_objects)
    for runs in _run({"model": model}, suites, dev, batch_size, frames, tracking):
        run = runs["model"]
        try:
            checks = check_thresholds(run, allow_missing_tasks)
        except SuiteError as e:
            raise typer.BadParameter(str(e), param_hint="--suite") from None
        _print_eval(run, checks)
        failed += sum(c.status == "fail" for c in checks)
        skipped += sum(c.status == "skipped" for c in checks)
        results.append(run_to_json(run, checks))
    _write_json(out, {"checkpoint": str(checkpoint), "suites": results, "passed": failed == 0,
                      "tracking": {"suites": tracked, "options": tracking.model_dump()} if tracking else None})
    if failed:
        console.print(f"[bold red]FAIL[/]: {failed} threshold(s) not met")
        raise typer.Exit(1)
    # A skipped threshold judged nothing (no head, or no ground truth on these frames): PASS says how many.
    console.print("[bold green]PASS[/]: every threshold met" if not skipped else
                  f"[bold green]PASS[/]: every judged threshold met; {skipped} skipped (their reason is in the tables)")


def _eval_data(checkpoint: Path, data: str, out: Path | None, frames: int | None, batch_size: int, device: str,
               tasks: str | None) -> None:
    """``eval --data``: the model's metrics on a dataset (``hydranet.eval.evaluate_dataset``), a table per task."""
    model = _load(checkpoint, device)
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    with cli_errors():  # a bad source, data that does not fit the model, an unknown task: one error line, exit 2
        dataset = open_data_option(data, setup=model.setup)
        total = len(dataset) if frames is None else min(frames, len(dataset))
        if frames is None and total > _MANY_FRAMES:
            console.print(f"scoring all {total} frames of --data {data} (--frames N scores the first N)")
        with progress(f"eval --data {data}", total, console, unit="frames") as bar:
            result = evaluate_dataset(model, dataset, names, frames, batch_size, device, source=f"--data {data}",
                                      model_name=f"checkpoint {checkpoint}", on_batch=bar.advance)
    table = Table(title=f"{checkpoint} on {data} — {result.frames} frames")
    for col in ("task", "labelled frames", "metric", "value"):
        table.add_column(col, justify="right" if col in ("labelled frames", "value") else "left", no_wrap=True)
    for task, metrics in result.metrics.items():
        for k, (metric, value) in enumerate(list(metrics.items())[:_SHOWN_METRICS]):  # the headline first
            table.add_row(task if k == 0 else "", str(result.labelled_frames[task]) if k == 0 else "", metric,
                          _fmt(value))
    console.print(table)
    for task, metrics in result.metrics.items():
        by_reason: dict[str, list[str]] = {}
        for k in list(metrics)[:_SHOWN_METRICS]:
            if k in result.undefined[task]:
                by_reason.setdefault(result.undefined[task][k], []).append(k)
        if by_reason:
            console.print(f"—: {task} undefined on these frames: "
                          + "; ".join(f"{why} ({', '.join(keys)})" for why, keys in by_reason.items()))
    if result.unlabelled:
        console.print(f"not scored (no frame carries their label): {', '.join(result.unlabelled)}")
    if out is None:
        console.print(f"every metric of every task: -o FILE.json ({sum(map(len, result.metrics.values()))} values)")
    _write_json(out, {"checkpoint": str(checkpoint), "data": data, **result.to_json()})


_SHOWN_METRICS = 6  # per task in the console table; the JSON holds all (per class, camera, range...)
_MANY_FRAMES = 500  # `eval --data` without --frames says first that it will score them all (the world: 4,000)


def _print_eval(run: Any, checks: list[Any]) -> None:
    suite = run.suite
    table = Table(title=f"suite [bold]{suite.name}[/] — {len(run.frames)} frames, {suite.seeds_text()}, "
                        f"{run.seconds:.1f} s",
                  caption=suite.description or None)
    for col in ("task", "metric", "value", "threshold", "result"):  # never truncated: scenarios give way
        table.add_column(col, justify="right" if col in ("value", "threshold") else "left", no_wrap=True)
    for name in suite.scenarios:
        table.add_column(name, justify="right", style="dim", overflow="fold")
    style = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skipped": "[yellow]skipped[/]"}
    undefined_cells = False
    for task in suite.tasks:
        te = run.tasks.get(task)
        rows: list[tuple[str, Any]] = [(c.metric, c) for c in checks if c.task == task]
        shown = {m for m, _ in rows}
        if te is not None:  # always the headline and what a sequence adds (velocity, occlusion, flicker)
            extra = [te.headline, *(k for k in _SEQUENCE_METRICS if k in te.metrics and k != te.headline)]
            rows = [(m, None) for m in extra if m not in shown] + rows
        for metric, c in rows:
            value = te.metrics.get(metric, math.nan) if te is not None else math.nan
            scen = [_fmt(te.per_scenario[s].get(metric, math.nan)) if te is not None and te.per_scenario.get(s)
                    else "—" for s in suite.scenarios]
            cells = [_fmt(value), *scen]
            table.add_row(task, metric, cells[0], "" if c is None else c.threshold,
                          "" if c is None else style[c.status] + (f" ({c.reason})" if c.reason else ""), *cells[1:])
            undefined_cells |= "—" in cells
    console.print(table)
    if undefined_cells:
        console.print("—: undefined on those frames: the suite's (value) or one scenario's (its column) frames hold "
                      "nothing the metric measures, e.g. no red light, or the model matched nothing there")
    for task, te in run.tasks.items():  # state confusion by name (traffic lights): what a headline can hide
        if hasattr(te.metric, "states") and hasattr(te.metric, "confusion"):
            _print_confusion(task, te.metric.states, te.metric.confusion(), te.metrics)


def _print_confusion(task: str, states: tuple[str, ...], conf: Any, metrics: dict[str, float]) -> None:
    table = Table(title=f"{task}: lights by state, rows ground truth, columns predicted")
    for col in ("truth \\ predicted", *states, "missed", "recall"):
        table.add_column(col, justify="left" if col.startswith("truth") else "right", no_wrap=True)
    for i, g in enumerate(states):
        missed = metrics.get(f"lights/{g}", math.nan) - conf.sum(axis=1)[i]
        table.add_row(g, *(str(int(v)) for v in conf[i]), _count(missed), _fmt(metrics.get(f"recall/{g}", math.nan)))
    # Predictions that matched no light, and each predicted state's precision (they count against it).
    table.add_row("no light", *(_count(metrics.get(f"false/{p}", math.nan)) for p in states), "", "")
    table.add_row("precision", *(_fmt(metrics.get(f"precision/{p}", math.nan)) for p in states), "", "")
    console.print(table)


def _count(value: float) -> str:
    """A count for a table cell; "—" when unknown."""
    return "—" if math.isnan(value) else str(int(value))


@app.command("gate")
def gate_command(
    baseline: Path = typer.Option(..., "--baseline", "-a", help="baseline: " + CHECKPOINT_HELP),
    candidate: Path = typer.Option(..., "--candidate", "-b", help="candidate: " + CHECKPOINT_HELP),
    suite: Path = typer.Option(Path("suites"), "--suite", "-s", help=_SUITE_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the comparison as JSON here"),
    frames: int | None = typer.Option(None, "--frames", "-n", min=1,
                                      help="frames per (scenario, seed), overriding each suite's 'frames'"),
    batch_size: int = typer.Option(4, min=1, help="frames per forward pass"),
    device: str | None = typer.Option(None, help=DEVICE_HELP),
    seed: int = typer.Option(0, help="bootstrap random seed"),
    track: bool = typer.Option(False, "--track", help=_TRACK_HELP + "; both models are tracked"),
) -> None:
    """Compare a candidate checkpoint against a baseline, task by task, on the same frames.

    Paired frame-bootstrap confidence intervals; a metric fails when it regresses by more than its
    tolerance (suite YAML) and the interval excludes no change. Exits 1 on any regression.
    """
    from dataclasses import asdict

    dev = _device(device)
    suites = _suites(suite)
    models = {"baseline": _load(baseline, dev, "--baseline"), "candidate": _load(candidate, dev, "--candidate")}
    suites = _checked(suites, models, default=suite == Path("suites"))
    tracking, _ = _tracking(track, suites, set(models["baseline"].task_objects) & set(models["candidate"].task_objects))
    all_rows = []
    for runs in _run(models, suites, dev, batch_size, frames, tracking):
        try:
            rows = gate(runs["baseline"], runs["candidate"], seed=seed)
        except SuiteError as e:
            raise typer.BadParameter(str(e), param_hint="--suite") from None
        s = runs["baseline"].suite
        print_gate(console, s.name, rows, frames=len(runs["baseline"].frames), resamples=s.bootstrap,
                   confidence=s.confidence)
        all_rows += rows
    failed = [r for r in all_rows if r.status == "fail"]
    _write_json(out, to_jsonable({"baseline": str(baseline), "candidate": str(candidate), "passed": not failed,
                                  "tracking": tracking.model_dump() if tracking else None,
                                  "rows": [asdict(r) for r in all_rows]}))
    if failed:
        console.print(f"[bold red]FAIL[/]: {len(failed)} regression(s) or unjudged row(s): "
                      + ", ".join(f"{r.suite}/{r.task}/{r.metric}" for r in failed))
        raise typer.Exit(1)
    skipped = sum(r.status == "skipped" for r in all_rows)
    # As `eval`'s verdict: a skipped row compared nothing (no head, or no ground truth on these frames).
    console.print("[bold green]PASS[/]: no task regressed beyond its tolerance" + (
        f"; {skipped} row(s) skipped (their reason is in the tables)" if skipped else ""))


@app.command("report")
def report_command(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    suite: Path = typer.Option(Path("suites"), "--suite", "-s", help=_SUITE_HELP),
    output: Path = typer.Option(Path("report.html"), "--out", "-o", "--output", help="the HTML file to write"),
    frames: int | None = typer.Option(None, "--frames", "-n", min=1,
                                      help="frames per (scenario, seed), overriding each suite's 'frames'"),
    samples: int = typer.Option(4, min=0, help="sample frames to draw per suite, worst first"),
    batch_size: int = typer.Option(4, min=1, help="frames per forward pass"),
    device: str | None = typer.Option(None, help=DEVICE_HELP),
    track: bool = typer.Option(False, "--track", help=_TRACK_HELP),
) -> None:
    """Write ONE self-contained HTML report: tables, PR curves, depth error vs distance, confusion
    matrices and sample frames (8 cameras + BEV, prediction vs ground truth), worst first."""
    dev = _device(device)
    suites = _suites(suite)
    model = _load(checkpoint, dev)
    suites = _checked(suites, {"model": model}, default=suite == Path("suites"))
    tracking, _ = _tracking(track, suites, model.task_objects)
    runs = [r["model"] for r in _run({"model": model}, suites, dev, batch_size, frames, tracking)]
    try:
        checks = [check_thresholds(r) for r in runs]
    except SuiteError as e:
        raise typer.BadParameter(str(e), param_hint="--suite") from None
    with working("drawing the report", console):
        size = write_html_report(output, model, runs, checks, checkpoint=str(checkpoint), samples=samples, device=dev)
    console.print(f"wrote {output} ({size / 1e6:.1f} MB)")
