"""CLI commands: ``hydranet generate`` (synthetic world -> shards) and ``hydranet data-info`` (inspect/verify)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from hydranet.cli.app import app
from hydranet.cli.errors import fail
from hydranet.console import make_console, progress
from hydranet.data import ShardDataset, ShardError
from hydranet.train import world_from_file
from hydranet.world import WorldConfig, check_existing, resolve
from hydranet.world import generate as run


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for shard-*.tar and manifest.json."),
    frames: int = typer.Option(None, "--frames", "-n", min=1, help="Number of samples (frames of the world's rig) "
                               "to write (default: a training config's dataset `frames`, else the world's own "
                               "num_scenes x frames_per_scene)."),
    seed: int = typer.Option(None, "--seed", help="World seed (overrides the config's `seed`)."),
    config: Path = typer.Option(None, "--config", "-c", help="WorldConfig YAML, or a training config (e.g. "
                                "configs/demo.yaml): the world of its --dataset, checked against its model. "
                                "Default: WorldConfig()."),
    dataset: str = typer.Option(None, "--dataset", help="With a training config: which world dataset "
                                "(data.datasets.NAME, or 'eval'); default: its only one."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Samples per shard file."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Processes rendering in parallel; the output "
                                "is byte-identical for any value."),
    image_format: str = typer.Option("npz", "--image-format", help="Camera image members: npz (fastest to read) "
                                     "or png (viewable, shards ~20% smaller, ~1.3x slower to read)."),
    overwrite: bool = typer.Option(False, "--overwrite", "--force", help="Regenerate even if OUT is up to date, "
                                   "and replace a different dataset in OUT (only once the new one is complete)."),
) -> None:
    """Render the synthetic world (the model's rig: 8 cameras by default) into WebDataset-style tar shards plus
    manifest.json.

    Sample i of the output is world sample i (whole consecutive scenes of `frames_per_scene` frames).
    Re-running with the same arguments finds the complete output and prints "up to date".
    """
    if image_format not in ("npz", "png"):
        raise typer.BadParameter(f"must be npz or png, got {image_format!r}", param_hint="--image-format")
    world, frames = _world_and_frames(config, dataset, seed, frames)
    console = make_console()
    try:  # the up-to-date check first, so a no-op run prints one line and no progress bar
        existing = check_existing(out, resolve(world, frames, shard_size, image_format)[2]) if not overwrite else None
    except (ShardError, ValueError) as e:  # OUT holds another dataset: bad input
        raise fail(str(e)) from e
    if existing is not None:
        size = sum(s.bytes for s in existing.shards)
        console.print(f"{out}: up to date ({existing.num_samples} samples, {len(existing.shards)} shards, "
                      f"{size / 1e6:.1f} MB); --overwrite regenerates")
        return
    start = time.perf_counter()
    with progress(f"generate {out}", frames, console, unit="frames") as bar:

        def tick(n: int) -> None:
            bar.update(n)
            bar.note(f"{n / max(bar.elapsed, 1e-9):.1f} frames/s")

        # ShardError/ValueError: exit 2; a full disk: exit 1 naming the file (hydranet.cli.errors)
        result = run(out, world, frames=frames, shard_size=shard_size, workers=workers, overwrite=overwrite,
                     progress=tick, image_format=image_format)
    m = result.manifest
    size = sum(s.bytes for s in m.shards)
    secs = time.perf_counter() - start
    console.print(f"wrote {m.num_samples} samples in {len(m.shards)} shards to {out} ({size / 1e6:.1f} MB, "
                  f"{size / m.num_samples / 1e3:.0f} kB/sample, {m.num_samples / secs:.1f} samples/s)")


def _world_and_frames(config: Path | None, dataset: str | None, seed: int | None,
                      frames: int | None) -> tuple[WorldConfig, int]:
    """The ``WorldConfig`` to render (``--config``/``--dataset`` plus ``--seed``; a training config's world
    dataset renders its model's setup and is checked against the model) and how many frames (``--frames``,
    else the training dataset's, else the world's own scenes x frames per scene); ``BadParameter`` if the world
    is invalid."""
    if config is not None and not config.is_file():
        raise typer.BadParameter(f"{config}: no such file", param_hint="--config")
    try:
        world, cfg = world_from_file(config, dataset, {"seed": seed} if seed is not None else None)
        if cfg is not None:
            name = dataset or next(n for n in sorted(cfg.data.datasets) if cfg.data.datasets[n].kind == "world")
            section = cfg.data.eval if name == "eval" else cfg.data.datasets[name]
            frames = frames if frames is not None else (section.frames if section is not None else None)
            cfg.resolved_model().check_data(world.rendered_setup, f"{config} dataset {name}")  # the one check
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--config" if config is not None else "--seed") from e
    if frames is None:  # the world's own length, as the world source without `frames`
        frames = world.num_scenes * world.frames_per_scene
    return world, frames


@app.command("data-info")
def data_info(
    data: str = typer.Argument(..., help="Shard directory (or its manifest.json), or an fsspec URL of one "
                               "(s3://, gs://, https://)."),
    verify: bool = typer.Option(False, "--verify", help="Check every shard's sha256 against the manifest."),
    deep: bool = typer.Option(False, "--deep", help="Verify (as --verify) and also read and decode every sample."),
) -> None:
    """Summarise a shard directory (source, rig, label counts, shards); optionally verify every byte."""

    console = make_console()
    ds = ShardDataset(data)  # not a dataset: ShardError, exit 2; a store that does not answer: exit 1
    m = ds.manifest
    size = sum(s.bytes for s in m.shards)
    src = m.source.get("kind", "?")
    world = m.source.get("world_config", {})
    console.print(f"[bold]{ds.root}[/bold]: {m.num_samples} samples in {len(m.shards)} shards, {size / 1e6:.1f} MB "
                  f"({size / max(m.num_samples, 1) / 1e3:.0f} kB/sample); hydranet {m.generator.get('version')}, "
                  f"created {m.created}")
    console.print(f"source: {src}" + (f", seed {world.get('seed')}, frames {m.source.get('frames')}" if world else ""))
    grid = m.setup.grid if m.setup is not None else None
    console.print(f"rig: {len(m.camera_names)} cameras {', '.join(m.camera_names)} at "
                  f"{m.image_size[0]}x{m.image_size[1]}" + (f"; BEV grid {grid.describe()}" if grid else ""))
    table = Table("label", "samples", "share", "task")
    for name, count in m.labels.items():
        table.add_row(name, str(count), f"{100 * count / m.num_samples:.0f}%", "yes" if name in m.tasks else "")
    console.print(table)
    if not (verify or deep):  # --deep verifies too: decoding every sample presumes the bytes are checked
        return
    decoded = [0]

    def on_sample(n: int) -> None:
        decoded[0] += n
        bar.note(f"{decoded[0]}/{m.num_samples} samples decoded")

    with progress("verify sha256", size, console, unit="bytes") as bar:
        # a corrupt, truncated or replaced shard is bad input (exit 2), as in README
        ds.verify(deep=deep, on_bytes=bar.advance, on_sample=on_sample)
    console.print("[green]ok[/green]: every shard matches its sha256" + (" and every sample decodes" if deep else ""))
