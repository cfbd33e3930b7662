"""``hydranet convert KIND --out SHARDS [--option value ...]``: any registered source → shards.

Options after KIND that ``convert`` itself does not take are the source's own options, dashes
becoming underscores and values parsed as YAML (``--dataroot DIR --version v1.0-mini --split
mini_val --cameras '[CAM_FRONT, CAM_BACK]'``); unknown ones are errors naming the option (exit 2).

``--config`` converts for the model of a training config (its ``model.setup``, declared once there): the source
is opened for that setup (nuScenes rasterises ``bev_semantic`` on its grid) and, unless ``--image-size`` or the
source's own options say otherwise, frames are resized to its image size and classes mapped onto its object
vocabulary — what training does with a dataset section (``hydranet.datasets.source_config``).

    hydranet convert nuscenes --dataroot data/nuscenes --version v1.0-mini --out data/nusc_mini
    hydranet convert nuscenes --dataroot data/nuscenes --config configs/nuscenes_overfit.yaml --out data/nusc_mini
    hydranet convert world --world my_world.yaml --frames 100 --out data/world100
"""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from hydranet.cli.app import app
from hydranet.cli.errors import cli_errors
from hydranet.cli.source_help import ConvertCommand
from hydranet.console import make_console, progress
from hydranet.data import convert as run
from hydranet.data import open_source, source_options
from hydranet.datasets import source_config
from hydranet.json_files import dumps
from hydranet.limits import max_image_pixels
from hydranet.setup import Setup
from hydranet.train import load_config


def _parse_extra_options(args: list[str]) -> dict[str, object]:
    """``["--dataroot", "DIR", "--filter-empty", "false", "--flag"]`` → ``{"dataroot": "DIR",
    "filter_empty": False, "flag": True}``; values are YAML. Raises ``typer.BadParameter`` on a stray value."""
    out: dict[str, object] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise typer.BadParameter(f"unexpected argument {arg!r}: source options are --name value")
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                raw, i = args[i + 1], i + 1
            else:
                raw = "true"
        try:
            out[key.replace("-", "_")] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.replace("-", "_")] = raw
        i += 1
    return out


def _parse_size(text: str | None) -> tuple[int, int] | None:
    """Parse ``--image-size`` ``"HxW"`` (pixels) into ``(H, W)``; ``None`` passes through.
    Raises ``typer.BadParameter`` (exit 2) for a malformed value, a side under 8 pixels or more pixels than
    ``hydranet.limits.max_image_pixels()``."""
    if text is None:
        return None
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected HxW (e.g. 256x448), got {text!r}", param_hint="--image-size") from None
    if min(h, w) < 8:
        raise typer.BadParameter(f"image size {h}x{w} is too small", param_hint="--image-size")
    if h * w > max_image_pixels():  # the limit every decoded image is held to (hydranet --max-image-pixels)
        raise typer.BadParameter(f"image size {h}x{w} is {h * w:,} pixels, over the limit of {max_image_pixels():,} "
                                 "(raise it with `hydranet --max-image-pixels N`)", param_hint="--image-size")
    return h, w


def _model_setup(config: Path | None) -> Setup | None:
    """The model setup of training config ``config`` (``model.setup``), None without one; ``typer.BadParameter``
    (exit 2) naming the file and field for a missing or invalid config."""
    if config is None:
        return None
    if not config.is_file():
        raise typer.BadParameter(f"{config}: no such file", param_hint="--config")
    try:
        return load_config(config).resolved_model().setup
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e


@app.command(cls=ConvertCommand, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def convert(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="Source kind: a registered source (world, shards, nuscenes, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output shard directory (shard-*.tar + manifest.json)."),
    image_size: str = typer.Option(None, "--image-size", help="Resize camera images to HxW (K rescaled); "
                                   "default: the --config model's input size, else as stored."),
    image_format: str = typer.Option("jpeg", "--image-format", help="Camera images inside the shards: jpeg "
                                     "(real data), png or npz (lossless). Labels are always lossless npz."),
    label_format: list[str] = typer.Option([], "--label-format", help="LABEL=png stores a dense uint8 label "
                                           "(drivable, lanes, bev_semantic...) as a viewable grey PNG instead of "
                                           "npz (repeatable)."),
    shard_size: int = typer.Option(64, "--shard-size", min=1, help="Samples per shard file."),
    limit: int = typer.Option(None, "--limit", min=1, help="Convert only the first N samples."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in OUT."),
    report: Path = typer.Option(None, "--report", help="Also write the conversion report (JSON) here."),
    config: Path = typer.Option(None, "--config", "-c", help="A training config: convert for its model's setup "
                                "(BEV labels on its grid; its image size and class vocabulary unless --image-size "
                                "or the source's options say otherwise)."),
) -> None:
    """Convert any registered data source into hydranet shards (streaming, bounded memory).

    Source options follow KIND, e.g. `hydranet convert nuscenes --dataroot DIR --version v1.0-mini
    --out SHARDS`; `hydranet convert KIND --help` lists KIND's options. The report lists samples,
    label counts, the classes kept and dropped, and what the source left out (and why).
    """

    if image_format not in ("jpeg", "png", "npz"):
        raise typer.BadParameter(f"must be jpeg, png or npz, got {image_format!r}", param_hint="--image-format")
    size = _parse_size(image_size)
    label_formats: dict[str, str] = {}
    for item in label_format:
        name, _, fmt = item.partition("=")
        if fmt not in ("png", "npz") or not name:
            raise typer.BadParameter(f"expected LABEL=png or LABEL=npz, got {item!r}", param_hint="--label-format")
        label_formats[name] = fmt
    spec = {"kind": kind, **_parse_extra_options(list(ctx.args))}
    setup = _model_setup(config)
    with cli_errors():  # SourceError/SourceConfigError (bad options, missing files or tokens): exit 2
        if setup is not None:  # the model's image size unless --image-size says otherwise, its vocabulary
            size = size or tuple(setup.image_size)
            spec = source_config(spec, setup.model_copy(update={"image_size": size}))
        source = open_source(source_options(spec, size), kind, setup=setup)
    if limit is None:  # the source's own ``--frames N`` means the same as ``--limit N`` here
        limit = source.options.frames
    console = make_console()
    total = len(source) if limit is None else min(limit, len(source))
    console.print(f"convert {kind}: {total} samples, cameras {list(source.camera_names)} -> {out}")

    def tick(n: int) -> None:
        bar.advance(n)
        bar.note(f"{bar.done / max(bar.elapsed, 1e-9):.2f} samples/s")

    with cli_errors(), progress(f"convert {kind}", total, console, unit="samples") as bar:
        manifest, rep = run(source, out, image_size=size, image_format=image_format, label_formats=label_formats,
                            shard_size=shard_size, overwrite=overwrite, frames=limit, on_sample=tick)
    mb = sum(s.bytes for s in manifest.shards) / 1e6
    console.print(f"wrote {manifest.num_samples} samples ({manifest.image_size[0]}x{manifest.image_size[1]}, "
                  f"{len(manifest.camera_names)} cameras) in {len(manifest.shards)} shards, {mb:.1f} MB")
    console.print(f"labels: {rep['labels']}")
    cm = rep["class_map"]
    kept = ", ".join(f"{src} {n}" if cm["model_class"][src] == src else f"{src}→{cm['model_class'][src]} {n}"
                     for src, n in cm["kept"].items())
    console.print(f"classes kept (dataset class→model class, objects): {kept or '-'}; dropped (mapped to null or "
                  f"not in the map): {cm['dropped']}", markup=False)
    for reason, n in rep["skipped"].items():
        console.print(f"left out: {n} {reason}", markup=False)
    if report is not None:
        report.write_text(dumps(rep) + "\n")
