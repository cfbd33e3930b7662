"""CLI commands: ``hydranet export``, ``hydranet quantize``, ``hydranet infer``.

Exit codes: 0 = done (and checks pass); 1 = a check failed (parity above 1e-3, INT8 metric drop above
``--max-drop``); 2 = bad input (missing checkpoint or graph, unknown task, bad option).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hydranet.checkpoint import CheckpointError
from hydranet.cli.app import CHECKPOINT_HELP, DATA_HELP, app
from hydranet.cli.errors import cli_errors
from hydranet.console import make_console, progress, working
from hydranet.deploy import (
    PARITY_TOLERANCE,
    DeployedModel,
    ExportError,
    ExportManifestError,
    QuantizeError,
    describe_outputs,
    export_checkpoint,
    heldout_batches,
    heldout_sequence_batches,
    int8_path,
    judge_drop,
    manifest_path,
    metric_drop,
    parity,
    quantize_graph,
    run_infer,
    suite_metrics,
)
from hydranet.eval import SuiteError, evaluate, load_suites
from hydranet.json_files import dumps, to_jsonable
from hydranet.outputs import OutputError

console = make_console()

# Held-out frames for the INT8 metric drop: on 48, one traffic light's state moved balanced accuracy by more
# than the 0.02 limit (docs/decisions.md), so fewer cannot resolve it.
_DROP_FRAMES = 192


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(data))
        console.print(f"wrote {path}")


def _fmt(x: float) -> str:
    # "z": a value that rounds to zero prints 0.0000, never -0.0000
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:z.4f}"


def _deployed(graph: Path, threads: int | None) -> Any:
    try:
        return DeployedModel(graph, threads=threads)
    except (ExportManifestError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e), param_hint="MODEL") from None


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    output: Path = typer.Option(Path("model.onnx"), "--out", "-o", "--output", help="ONNX file to write; the "
                                "manifest goes beside it as <name>.manifest.json"),
    tasks: str | None = typer.Option(None, "--tasks", help="comma-separated heads to export (default: all); "
                                     "camera-only tasks give a graph without BEV fusion"),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 16 with BEV tasks: GridSample; camera-only "
                              ">= 13; at most the newest the installed torch exports, 23 in torch 2.13)"),
    batch: int = typer.Option(1, "--batch", min=1, help="batch size the graph is built for (fixed)"),
    rig: str | None = typer.Option(None, "--rig", help="the rig of the model's setup the graph takes (a model "
                                   "trained on several rigs lists them in its setup.rigs; default: the first)"),
    verify: bool = typer.Option(False, "--verify", help="compare ONNX Runtime with PyTorch eager on held-out "
                                "synthetic frames of the exported rig and print the max abs difference per output "
                                "(fails above 1e-3)"),
    verify_frames: int = typer.Option(4, "--verify-frames", min=1, help="held-out frames for --verify"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (torch and ONNX Runtime)"),
) -> None:
    """Export a checkpoint to ONE ONNX graph for all cameras and the chosen heads, plus its manifest."""
    import onnx

    _threads(threads)
    try:
        with working(f"exporting {checkpoint} -> {output}", console):
            manifest, model = export_checkpoint(checkpoint, output, tasks, opset, batch, rig)
    except ExportError as e:
        raise typer.BadParameter(str(e), param_hint=e.option) from None
    except OutputError as e:  # -o not NAME.onnx, or a file hydranet did not export: --out's fault, not CHECKPOINT's
        raise typer.BadParameter(str(e), param_hint="--out") from None
    except (CheckpointError, ValueError) as e:  # ValueError: a model config this version rejects; a full disk: exit 1
        raise typer.BadParameter(str(e), param_hint="CHECKPOINT") from None
    graph = onnx.load(str(output), load_external_data=False)
    size = output.stat().st_size
    table = Table(title=f"{output} (opset {manifest.opset}, batch {manifest.batch}, {len(graph.graph.node)} nodes, "
                        f"{size / 1e6:.2f} MB)")
    for col in ("output", "task", "shape", "decoder"):
        table.add_column(col)
    for o in manifest.outputs:
        table.add_row(o.name, o.task, "×".join(map(str, o.shape)), o.decoder.rsplit(".", 2)[-2])
    for s in manifest.state_outputs:  # a temporal graph: the memory the runtime feeds back next frame
        table.add_row(s.name, "(memory)", "×".join(map(str, s.shape)), f"feeds {s.feeds}")
    console.print(table)
    console.print(f"manifest: {manifest_path(output)}  trunk hash {manifest.trunk_hash[:16]}  rig "
                  f"'{manifest.setup.rig_name()}': {manifest.setup.rig().describe()} at "
                  f"{manifest.image_size[0]}x{manifest.image_size[1]}")
    if not verify:
        return

    dm = _deployed(output, threads)
    with working(f"parity on {verify_frames} held-out frames", console):
        diffs = parity(model, dm, frames=verify_frames)
    table = Table(title=f"ONNX Runtime vs PyTorch eager, {verify_frames} held-out frames (fp32)")
    table.add_column("output")
    table.add_column("max |diff|", justify="right")
    table.add_column("status")
    for name, d in diffs.items():
        table.add_row(name, f"{d:.2e}", "[green]ok" if d <= PARITY_TOLERANCE else "[red]FAIL")
    console.print(table)
    # not (d <= tol): a NaN difference (one side NaN) fails too; max() and > would let it pass
    failed = {name: d for name, d in diffs.items() if not d <= PARITY_TOLERANCE}
    if failed:
        what = ", ".join(f"{name} {d:.2e}" if math.isfinite(d) else f"{name} {d} (non-finite on one side only)"
                         for name, d in failed.items())
        console.print(f"[red]parity failed (max diff > {PARITY_TOLERANCE:g}): {what}")
        raise typer.Exit(1)
    console.print(f"[green]parity ok: max diff {max(diffs.values()):.2e} <= {PARITY_TOLERANCE:g}")


def _drop_table(title: str, rows: dict[str, dict[str, Any]], max_drop: float) -> dict[str, str]:
    """Print one comparison table; returns ``{task: why it fails}`` (``judge_drop``: a drop above ``max_drop``, or
    INT8 undefined where fp32 was measured). Each row gains its ``status`` and ``reason`` (the JSON report)."""
    table = Table(title=f"{title} (drop > 0 = INT8 worse; limit {max_drop})")
    for col in ("task", "metric", "fp32", "int8", "drop", "status"):
        table.add_column(col, justify="right" if col in ("fp32", "int8", "drop") else "left")
    failed = {}
    for name, r in rows.items():
        r["status"], r["reason"] = judge_drop(r, max_drop)
        if r["status"] == "fail":
            failed[name] = r["reason"]
        shown = {"ok": "[green]ok", "n/a": "n/a"}.get(r["status"], "[red]undefined" if math.isnan(r["drop"])
                                                     else "[red]over")
        table.add_row(name, r["metric"], _fmt(r["base"]), _fmt(r["candidate"]), _fmt(r["drop"]), shown)
    console.print(table)
    return failed


@app.command()
def quantize(
    model: Path = typer.Argument(..., help="fp32 ONNX graph written by `hydranet export` (manifest beside it)"),
    output: Path | None = typer.Option(None, "--out", "-o", "--output", help="INT8 graph (default <name>.int8.onnx)"),
    calib_frames: int = typer.Option(32, "--calib-frames", min=1, help="synthetic frames for calibration"),
    eval_frames: int = typer.Option(_DROP_FRAMES, "--eval-frames", min=0, help="held-out frames to measure the "
                                    "per-task metric drop (0: skip); enough that one object moves a headline by less "
                                    "than --max-drop (on 48 frames one traffic light's state moved balanced accuracy "
                                    "by more than 0.02)"),
    suite: Path | None = typer.Option(None, "--suite", help="also measure the drop on evaluation suites (a suite "
                                      "YAML or a directory of them), with the `hydranet eval` runner"),
    suite_frames: int | None = typer.Option(None, "--suite-frames", min=1, help="frames per scenario and seed "
                                            "(overrides the suites' own)"),
    max_drop: float = typer.Option(0.02, "--max-drop", help="fail (exit 1) if a task's headline metric gets worse "
                                   "than fp32 by more than this (absolute, a finite number >= 0), or is undefined "
                                   "in INT8 where fp32 measured it"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for ONNX Runtime"),
    json_out: Path | None = typer.Option(None, "--json", help="write the metric comparison as JSON"),
) -> None:
    """Static INT8 quantization (QDQ, per-channel) with synthetic calibration frames; reports the metric drop."""
    if not (math.isfinite(max_drop) and max_drop >= 0):  # nan compares False with every drop: all would pass
        raise typer.BadParameter(f"must be a finite number >= 0, got {max_drop}", param_hint="--max-drop")
    _threads(threads)
    output = output or int8_path(model)
    if suite is not None:  # a bad suite is refused before minutes of calibration, not after
        try:
            load_suites(str(suite))
        except SuiteError as e:
            raise typer.BadParameter(str(e), param_hint="--suite") from None
    try:
        with progress("calibrating, then quantizing", calib_frames, console, unit="frames") as bar:
            manifest = quantize_graph(model, output, calib_frames, on_frame=bar.advance)
    except (QuantizeError, ExportManifestError) as e:
        raise typer.BadParameter(str(e), param_hint="MODEL") from None
    console.print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, fp32 {model.stat().st_size / 1e6:.2f} MB) "
                  f"and its manifest {manifest_path(output)}; {len(manifest.quantization.fp32_nodes)} convs kept "
                  f"fp32, {len(manifest.quantization.dense_nodes)} grouped convs run dense")
    fp32, int8 = _deployed(model, threads), _deployed(output, threads)
    report: dict[str, Any] = {"graph": str(model), "int8": str(output), "calib_frames": calib_frames,
                              "max_drop": max_drop, "comparisons": {}}
    failed: dict[str, str] = {}
    if 0 < eval_frames < _DROP_FRAMES:
        console.print(f"[yellow]note: {eval_frames} held-out frames may be too few to resolve --max-drop {max_drop}: "
                      f"one light or box can move a headline by more (the default is {_DROP_FRAMES})")
    if eval_frames > 0:
        results = {}
        for label, dm in (("fp32", fp32), ("int8", int8)):
            # A streaming graph is scored on consecutive frames of graph-batch scenes, its memory carried.
            batches = (heldout_sequence_batches(manifest, max(1, eval_frames // manifest.batch)) if dm.is_temporal
                       else heldout_batches(manifest, eval_frames, manifest.batch))
            with progress(f"evaluating {label}", eval_frames, console, unit="frames") as bar:
                results[label] = evaluate(dm, batches, on_frame=lambda frame, bar=bar: bar.advance(1))
        rows = metric_drop(results["fp32"], results["int8"], fp32.tasks)
        failed |= _drop_table(f"INT8 vs fp32 on {eval_frames} held-out frames", rows, max_drop)
        report["comparisons"]["heldout"] = {"frames": eval_frames, "drop": rows, "metrics": results}
    if suite is not None:
        try:
            with progress(f"suites {suite}", None, console, unit="frames") as bar:
                per_suite = suite_metrics({"fp32": fp32, "int8": int8}, str(suite), suite_frames,
                                          on_batch=bar.update)
        except SuiteError as e:
            raise typer.BadParameter(str(e), param_hint="--suite") from None
        for name, res in per_suite.items():
            tasks = {t: fp32.tasks[t] for t in res["fp32"]}
            rows = metric_drop(res["fp32"], res["int8"], tasks)
            failed |= {f"{name}/{t}": why for t, why in
                       _drop_table(f"INT8 vs fp32 on suite '{name}'", rows, max_drop).items()}
            report["comparisons"][f"suite:{name}"] = {"drop": rows, "metrics": res}
    _write_json(json_out, to_jsonable(report))
    if failed:
        console.print(f"[red]INT8 check failed (--max-drop {max_drop}): "
                      + "; ".join(f"{task}: {why}" for task, why in failed.items()))
        raise typer.Exit(1)


@app.command()
def infer(
    model: Path = typer.Argument(..., help="ONNX graph (fp32 or INT8) with its manifest beside it"),
    data: str = typer.Option("synthetic", "--data", help=f"{DATA_HELP}. 'synthetic' renders held-out frames for "
                             "the graph; anything else is opened for the graph's setup (its manifest's: a world "
                             "renders it, a source resizes to its image size and maps classes onto its "
                             "vocabulary)"),
    out: Path = typer.Option(Path("infer"), "--out", "-o", help="new directory for predictions.json and "
                             "frame_XXXX.png/.npz; appears only when every frame is written"),
    frames: int | None = typer.Option(None, "--frames", min=1, help="frames to run (default: 8 synthetic / all)"),
    ground_truth: bool = typer.Option(False, "--ground-truth", help="also draw the frames' labels, if any"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for ONNX Runtime"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier infer/predict output in OUT "
                                   "(only once the new one is complete)"),
    track: bool = typer.Option(False, "--track", help="stream consecutive frames and track the objects3d boxes: each "
                               "gets a track_id and its track's velocity and score (docs/eval.md)"),
) -> None:
    """Decode and draw predictions using ONLY the ONNX graph and its manifest (no checkpoint, no PyTorch model)."""
    _threads(threads)
    dm = _deployed(model, threads)  # clear errors for a bad graph/manifest before any frame is rendered
    # cli_errors: a missing, truncated or corrupt shard (ShardError), or --track on a graph without objects3d, is
    # one error line, exit 2
    with cli_errors():
        try:
            with progress("inferring", frames, console, unit="frames") as bar:
                result = run_infer(model, data, out, frames, threads, ground_truth, on_frame=bar.advance,
                                   overwrite=overwrite, track=track)
        except ExportManifestError as e:  # the graph's manifest does not fit the data
            raise typer.BadParameter(str(e), param_hint="--data") from None
    counts = {}
    for rec in result["frames"]:
        for name, entry in rec["tasks"].items():
            if "scores" in entry:
                counts[name] = counts.get(name, 0) + len(entry["scores"])
    summary = ", ".join(f"{k}: {v} objects" for k, v in counts.items())
    tail = f"; {summary}" if summary else ""
    console.print(f"{len(result['frames'])} frames -> {out}/ ({describe_outputs(out)}){tail}")
    if result["streamed"]:  # the memory and/or the tracks went from frame to frame, reset at each new scene
        scenes = len({rec["scene_id"] for rec in result["frames"]})
        carried = " and ".join(w for w, on in (("the memory", dm.is_temporal),
                                               ("the objects3d tracks (track_id, velocity, score)", track)) if on)
        console.print(f"streamed: {carried} carried from frame to frame, reset at the first frame of each of "
                      f"its {scenes} scenes")
