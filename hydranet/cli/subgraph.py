"""CLI commands for sub-graph training: ``hydranet cache-features`` and ``hydranet merge``.

(``hydranet train --from CKPT --tasks/--add-task/--from-cache`` lives on the ``train`` command.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hydranet.checkpoint import CheckpointError, load_model, trunk_hash
from hydranet.cli.app import CHECKPOINT_HELP, DEVICE_HELP, app
from hydranet.cli.errors import BAD_INPUT, FAILED, fail
from hydranet.cli.gate_table import print_gate
from hydranet.console import make_console, progress, working
from hydranet.data import ShardError
from hydranet.datasets import dataset_setup, open_data_option, open_dataset
from hydranet.eval import SuiteError, gate, load_suites, run_suite
from hydranet.json_files import to_jsonable
from hydranet.train import CacheError, MergeError, build_merged, plan_merge, resolve_device, save_merged, write_cache
from hydranet.yaml_files import yaml_error_message


def _fail(message: str, error: BaseException) -> typer.Exit:
    """Bad input exits 2; an OS failure (disk full, permissions) exits 1."""
    bad = not isinstance(error, OSError) or isinstance(error, FileNotFoundError | FileExistsError)
    return fail(message, BAD_INPUT if bad else FAILED)


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _open_data(spec: str, model: Any, world: list[str]) -> Any:
    """``--data`` as a dataset; a synthetic world, or a world file that declares no setup of its own, renders the
    model's setup (as ``train``, ``eval`` and ``predict`` open it)."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in world:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE (a WorldConfig field)", param_hint="--world")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise typer.BadParameter(yaml_error_message(e, f"--world {item!r}", value)) from None
    if spec == "synthetic":
        return open_dataset("synthetic", world={"setup": model.setup.model_dump(mode="json")} | overrides)
    if overrides:
        raise typer.BadParameter("only applies to --data synthetic", param_hint="--world")
    return open_data_option(spec, setup=model.setup)


@app.command("cache-features")
def cache_features(
    ckpt: Path = typer.Option(..., "--ckpt", help="The model whose frozen trunk + neck to cache: " + CHECKPOINT_HELP),
    data: str = typer.Option(..., "--data", help="Shard directory, 'synthetic' (the world rendering the model's "
                             "setup; see --world), or a world .yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache directory to create."),
    frames: int = typer.Option(None, "--frames", "-n", min=1, help="Cache the first N frames (default: all)."),
    world: list[str] = typer.Option([], "--world", help="WorldConfig override for --data synthetic, e.g. "
                                    "--world seed=3 --world num_scenes=10 (repeatable; YAML values)."),
    labels: str = typer.Option(None, "--labels", help="Comma-separated labels to store (default: the label of every "
                               "registered task, so tasks added later find theirs)."),
    levels: str = typer.Option(None, "--levels", help="Comma-separated FPN levels to store (default: all the neck "
                               "makes; p2 is ~3/4 of the bytes, drop it if no head reads stride 4)."),
    shard_frames: int = typer.Option(64, "--shard-frames", min=1, help="Frames per shard directory."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Frames per trunk forward pass."),
    max_gb: float = typer.Option(20.0, "--max-gb", min=0.0, help="Refuse to start if the estimated cache size "
                                 "exceeds this many GB (1e9 bytes)."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader processes loading/rendering frames."),
    device: str = typer.Option(None, "--device", help=DEVICE_HELP + "."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache at --out."),
) -> None:
    """Cache a frozen trunk's multi-scale features (fp16, memory-mapped, sharded) with labels and camera
    geometry, keyed by the trunk hash, for head-only training (hydranet train --from-cache)."""
    dev = resolve_device(device, "--device")  # before any work: a device this machine lacks is bad input
    console = make_console(stderr=True)
    try:
        model, state = load_model(ckpt, device=dev)
        ds = _open_data(data, model, world)
        setup = dataset_setup(ds)
        model.cfg.check_data(setup, f"--data {data}", f"checkpoint {ckpt}", labels=_split(labels),
                             remedy="leave their labels out of --labels")
        total = len(ds) if frames is None else min(frames, len(ds))
        with progress("caching", total, console, unit="frames") as bar:
            manifest = write_cache(
                model, ds, out, trunk_hash=trunk_hash(model), setup=setup, frames=frames, shard_frames=shard_frames,
                batch_size=batch_size, labels=_split(labels), levels=_split(levels), max_gb=max_gb,
                num_workers=workers, device=dev, overwrite=overwrite,
                info={"checkpoint": str(state.path), "data": data, "world": list(world)},
                on_progress=lambda done, n: bar.update(done))
    except (CacheError, CheckpointError, ShardError, ValueError) as e:  # ShardError: corrupt shard
        raise _fail(str(e), e) from None
    m = manifest
    console.print(f"wrote {out}: {m['frames']} frames in {len(m['shards'])} shard(s), {m['bytes'] / 1e6:.1f} MB "
                  f"({m['bytes_per_frame'] / 1e6:.2f} MB/frame), trunk {m['trunk_hash'][:12]}")
    console.print(f"  {m['frames_per_s']:.2f} frames/s, {m['mb_per_s']:.1f} MB/s end to end (loading + trunk + "
                  f"writing); {m['write_mb_per_s']:.0f} MB/s into the memory maps; labels: {', '.join(m['labels'])}")


@app.command("merge")
def merge(
    base: Path = typer.Argument(..., help="The base model (trunk, neck, fusion and every head not supplied below): "
                                + CHECKPOINT_HELP),
    heads: list[str] = typer.Argument(..., help="Head checkpoints: PATH (the heads that run trained) or "
                                      "PATH:task1,task2."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (OUT/checkpoints/merged)."),
    gate_suite: Path = typer.Option(None, "--gate-suite", help="Run the regression gate (hydranet gate) of the "
                                    "merged network against BASE on these suites (a YAML or a directory)."),
    gate_frames: int = typer.Option(None, "--gate-frames", min=1, help="Frames per (scenario, seed) for the gate, "
                                    "overriding the suites'."),
    device: str = typer.Option(None, "--device", help="the gate's " + DEVICE_HELP + "."),
) -> None:
    """Combine heads trained separately on the same trunk into one checkpoint. Refuses checkpoints whose
    trunk hash differs from BASE's. Exits 1 when the gate finds a regression (the merge is still written)."""
    from dataclasses import asdict

    dev = resolve_device(device, "--device")  # before "merging into": a device this machine lacks is bad input
    console = make_console(stderr=True)
    try:
        plan = plan_merge(base, heads)
        model = build_merged(plan)
        console.print(f"merging into {plan.base.name} (trunk {plan.base.state.get('trunk_hash', '')[:12]}): "
                      + ", ".join(f"{t} <- {c.name}" for t, c in plan.heads.items()))
        gate_info = None
        failed: list[Any] = []
        if gate_suite is not None:
            base_model, _ = load_model(base, device=dev)
            rows = []
            with working("gate: evaluating BASE and the merged network on the same frames", console):
                for suite in load_suites(gate_suite):
                    runs = run_suite({"baseline": base_model, "candidate": model.to(dev)}, suite, device=dev,
                                     frames=gate_frames)
                    suite_rows = gate(runs["baseline"], runs["candidate"])
                    print_gate(console, suite.name, suite_rows, frames=len(runs["baseline"].frames),
                               resamples=suite.bootstrap, confidence=suite.confidence, names=("base", "merged"),
                               more_frames="--gate-frames")
                    rows += suite_rows
            model.cpu()
            failed = [r for r in rows if r.status == "fail"]
            gate_info = to_jsonable({"suite": str(gate_suite), "passed": not failed, "rows": [asdict(r) for r in rows]})
        path = save_merged(plan, model, out, gate_info)
    except (MergeError, CheckpointError, SuiteError, ValueError) as e:  # a full disk: exit 1 naming the file
        raise _fail(str(e), e) from None
    console.print(f"wrote {path}")
    if failed:
        console.print(f"[bold red]gate FAIL[/]: {len(failed)} regression(s): "
                      + ", ".join(f"{r.suite}/{r.task}/{r.metric}" for r in failed))
        raise typer.Exit(1)
    if gate_suite is not None:
        console.print("[bold green]gate PASS[/]: no task regressed beyond its tolerance against BASE")

