"""CLI command: ``hydranet predict`` (a checkpoint's predictions on any dataset and rig, drawn)."""

from __future__ import annotations

from pathlib import Path

import typer

from hydranet.cli.app import CHECKPOINT_HELP, DATA_HELP, app
from hydranet.console import progress
from hydranet.deploy import describe_outputs
from hydranet.predict import run_predict


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    data: str = typer.Option(..., "--data", "-d", help=f"Any dataset: {DATA_HELP}. A world renders the "
                             "model's setup unless it declares its own; other data run as they are."),
    out: Path = typer.Option(Path("predict"), "--out", "-o", help="New directory for predictions.json and "
                             "frame_XXXX.png/.npz; appears only when every frame is written."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier predict/infer output in OUT "
                                   "(only once the new one is complete)."),
    frames: int = typer.Option(None, "--frames", min=1, help="Frames to run (default: all)."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated heads (default: all), e.g. the camera "
                              "tasks for a single dash cam."),
    ground_truth: bool = typer.Option(False, "--ground-truth", help="Also draw the frames' labels, if any."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    scale: int = typer.Option(2, "--scale", min=1, max=8, help="Upscale factor of the camera tiles."),
    track: bool = typer.Option(False, "--track", help="Stream each scene's frames in order and track the objects3d "
                               "boxes: each gets a track_id and its track's velocity and score (docs/eval.md)."),
) -> None:
    """Draw a checkpoint's predictions on any dataset, whatever its rig (1, 6 or 8 cameras): the model takes
    K and T per frame. A model with the video memory streams the frames in order (its memory reset at each new
    scene). `hydranet infer` does the same from an exported ONNX graph (fixed rig)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    # a bad checkpoint, source or shard, a non-empty OUT without --overwrite: exit 2; a full disk: exit 1 naming
    # the file (hydranet.cli.errors); either way OUT is left as it was
    with progress("predict", frames, unit="frames") as bar:
        result = run_predict(checkpoint, data, out, frames=frames, tasks=names, ground_truth=ground_truth,
                             scale=scale, on_frame=bar.advance, overwrite=overwrite, track=track)
    typer.echo(f"wrote {len(result['frames'])} frames to {out} ({describe_outputs(out)})")
    if track:
        scenes = len({rec["scene_id"] for rec in result["frames"]})
        typer.echo(f"tracked: the objects3d boxes (track_id, velocity, score) carried from frame to frame, reset at "
                   f"the first frame of each of its {scenes} scenes")
