"""CLI command: ``hydranet view`` (a scene, or a model's predictions on it, as a Rerun recording)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from hydranet.checkpoint import load_model
from hydranet.cli.app import CHECKPOINT_HELP, app
from hydranet.cli.errors import cli_errors, fail
from hydranet.console import make_console, progress
from hydranet.data import resize_sample
from hydranet.datasets import dataset_setup, open_data_option, open_dataset
from hydranet.eval import Evaluator
from hydranet.predict import check_labels_drawable, model_batch, own_cameras
from hydranet.viz import RerunMissing, SceneRecorder, decoded_cpu, require_rerun


@app.command()
def view(
    out: Path = typer.Option(Path("scene.rrd"), "--out", "-o", help="Rerun recording to write (.rrd); open it "
                             "with `rerun FILE`."),
    data: str = typer.Option(None, "--data", "-d", help="Frames to show: a shard directory, KIND:PATH of a "
                             "source, a source YAML, or 'synthetic' (default: the synthetic world; with --model, "
                             "the world rendering the model's setup)."),
    model: Path = typer.Option(None, "--model", "-m", help="A trained model (" + CHECKPOINT_HELP + "): its "
                               "predictions are logged beside the ground truth."),
    frames: int = typer.Option(16, "--frames", "-n", min=1, help="Frames to log, from --start in order."),
    start: int = typer.Option(0, "--start", min=0, help="First frame."),
    tasks: str = typer.Option(None, "--tasks", help="With --model: comma-separated heads (default: all)."),
) -> None:
    """Write a Rerun recording of a scene (world or dataset) or of a model's predictions on it: every camera
    with its K and pose, 2D and 3D boxes, lanes, drivable space, depth as images and 3D points, BEV maps and
    the ego trajectory, on a per-frame timeline (prediction and truth side by side)."""
    try:
        require_rerun()
    except RerunMissing as e:
        raise fail(str(e)) from None
    console = make_console(stderr=True)
    with cli_errors():
        net = None
        if model is not None:
            net, _ = load_model(model)
            net.eval()
        if data is None or data == "synthetic":
            world = {} if net is None else {"setup": net.setup.model_dump(mode="json")}
            dataset = open_dataset("synthetic", world=world)
        else:
            dataset = open_data_option(data)
        names = list(net.task_objects) if net is not None and tasks is None else (
            [t.strip() for t in tasks.split(",") if t.strip()] if tasks else [])
        if net is not None and (unknown := [t for t in names if t not in net.task_objects]):
            raise fail(f"--tasks: {unknown} are not heads of {model} ({list(net.task_objects)})")
        if start >= len(dataset):
            raise fail(f"--start {start}: {data or 'the world'} holds {len(dataset)} frames")
        if net is not None:  # the labels are drawn beside the predictions
            check_labels_drawable(dataset, net.setup, {t: net.task_objects[t] for t in names}, f"--data {data}",
                                  f"--model {model}", remedy="choose --tasks without that task")
        stop = min(len(dataset), start + frames)
        # A model with the video memory streams the frames in order (its memory reset at each new scene), as
        # `predict`, `eval` and `infer` run it: frame by frame from an empty memory it would be another model.
        predictor = None if net is None else Evaluator(net, {t: net.task_objects[t] for t in names}, score=False,
                                                       stream=net.is_temporal)
        recorder = SceneRecorder(out, setup=dataset_setup(dataset), model_setup=None if net is None else net.setup)
        with recorder, progress("view", stop - start, console, unit="frames") as bar:
            for k, i in enumerate(range(start, stop)):
                sample = dataset[i]
                prediction = None
                if predictor is not None:  # a rig with fewer cameras than the model's runs padded, as in predict
                    sample = resize_sample(sample, net.setup.image_size)
                    batch, valid = model_batch(replace(sample, labels={}), net.setup)
                    frame = predictor.step(batch, camera_valid=valid)
                    n = len(sample.camera_names)
                    prediction = {t: decoded_cpu(own_cameras(frame.decoded(t)[0], n, net.task_objects[t].space))
                                  for t in names}
                recorder.log_frame(k, sample, prediction=prediction)
                bar.advance()
    what = f"{model}'s predictions and the ground truth" if net is not None else "the ground truth"
    console.print(f"wrote {out} ({stop - start} frames of {data or 'the synthetic world'}, {what}); "
                  f"open it with: rerun {out}", soft_wrap=True)
