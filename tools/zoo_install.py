"""Put a trained checkpoint into the model zoo, and write the floors `make test` checks it against.

    python tools/zoo_install.py install RUN [--name tiny-world] [--config configs/reference.yaml]
    python tools/zoo_install.py floors [--results docs/results/reference.json] [--out suites/reference]

``install`` copies the checkpoint a run (or checkpoint directory) holds -- ``model.safetensors`` and
``state.json`` exactly as training wrote them, after the checkpoint loader's own integrity checks -- into
``hydranet/model/pretrained/<name>/`` and writes ``provenance.json`` last (the files' sha256 are in it, so a
half-finished install is refused by every load): the config file that reproduces the weights and the
``--set`` overrides the run used beyond it, the command, steps, training data, sha256, the source checkpoint,
git commit and time. The entry must be registered in ``hydranet/model/zoo.py``. ``--data-rendered-from-config
NOTE``: the run read its frames from a render of the config's own datasets (``hydranet generate`` shards,
checked identical): the data overrides are then not part of the reproduce command, the shipped ``state.json``
names the config's datasets (the same frames, rendered wherever hydranet is installed) instead of the render's
paths, and ``NOTE`` (how the render was checked) and the data the run actually read are recorded beside it.

``floors`` turns the figures ``benchmarks/reference.py`` measured (``tools/figures.py record reference --
python benchmarks/reference.py``) into one suite per condition, ``suites/reference/<condition>.yaml``:
the condition's world, its test seed and frame count, and per task the floors (``>= floor`` / ``<= ceiling``)
that JSON derived from the model's own figures and the measured seed noise. The files say they are
generated; nobody types a floor. ``make reference`` runs train, install, record, floors and render.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from hydranet.checkpoint import CheckpointError, load_model
from hydranet.model import PRETRAINED, ZooError
from hydranet.model.zoo import PROVENANCE_FILE, STATE_FILE, WEIGHTS_FILE
from hydranet.outputs import write_bytes_atomic
from hydranet.train.config import load_config
from hydranet.train.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
FIGURES = "reference"  # docs/results/reference.json
FLOORS_DIR = ROOT / "suites" / "reference"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def overrides_beyond(config_file: Path, used: dict[str, Any]) -> dict[str, Any]:
    """The ``--set key=value`` overrides that turn ``config_file`` into the config a run ``used`` (both
    validated and dumped the same way, so defaults do not show up as differences)."""
    base = _flat(load_config(config_file).model_dump(mode="json"))
    run = _flat(used)
    return {k: v for k, v in sorted(run.items()) if base.get(k, object()) != v}


def _train_seconds(checkpoint: Path) -> float | None:
    """The wall-clock seconds of the run that wrote ``checkpoint`` (its ``train_summary.json``), if it finished."""
    summary = checkpoint.parent.parent / "train_summary.json"  # RUN/checkpoints/step_N -> RUN
    try:
        return round(float(json.loads(summary.read_text())["seconds"]), 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def install(run: str, name: str, config: str, data_note: str | None = None) -> Path:
    """Copy ``run``'s checkpoint into the zoo entry ``name`` with its provenance; returns the directory.
    ``data_note``: the run's data was a render of the config's datasets, checked as the note says (the data
    overrides are left out of the reproduce command, the note and the data read are recorded)."""
    if name not in PRETRAINED:
        raise SystemExit(f"error: '{name}' is not a registered zoo entry ({', '.join(PRETRAINED)}): register it in "
                         "hydranet/model/zoo.py first")
    model, ckpt = load_model(run)  # every integrity check of a checkpoint load, and the weights fit the model
    config_file = (ROOT / config) if not Path(config).is_absolute() else Path(config)
    used = ckpt.state.get("config") or {}
    overrides = overrides_beyond(config_file, used)
    read = used.get("data", {})
    if data_note is not None:  # the frames the run read are the config's own, rendered ahead of time
        overrides = {k: v for k, v in overrides.items() if not k.startswith("data.")}
        data = load_config(config_file).model_dump(mode="json")["data"]
    else:
        data = read
    weights = (ckpt.path / WEIGHTS_FILE).read_bytes()
    state = (ckpt.path / STATE_FILE).read_bytes()
    if data_note is not None:
        # The checkpoint's own config names the render's paths on the training machine: the shipped copy names
        # the config's datasets instead (the same frames), so `train --from zoo:NAME` and a vacation without a
        # train_config render them wherever hydranet is installed. `data_read` in the provenance keeps the paths.
        tree = json.loads(state)
        tree["config"]["data"] = data
        state = json.dumps(tree, indent=1, sort_keys=True).encode()  # as hydranet.checkpoint writes it
    rel_config = config_file.relative_to(ROOT) if config_file.is_relative_to(ROOT) else config_file
    sets = "".join(f" --set {k}={json.dumps(v)}" for k, v in overrides.items())
    provenance = {
        "name": name,
        "config": str(rel_config), "config_sha256": _sha256(config_file.read_bytes()), "overrides": overrides,
        "reproduce": f"hydranet train --config {rel_config}{sets} --out runs/{config_file.stem}",
        "step": ckpt.state.get("step"), "batch_size": used.get("train", {}).get("batch_size"),
        "samples_seen": (ckpt.state.get("step") or 0) * used.get("train", {}).get("batch_size", 0)
                        * used.get("train", {}).get("grad_accum", 1),
        "data": data.get("datasets"), "eval_data": data.get("eval"),
        **({"data_note": data_note, "data_read": {"datasets": read.get("datasets"), "eval": read.get("eval")}}
           if data_note is not None else {}),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": _train_seconds(ckpt.path), "threads": used.get("train", {}).get("threads"),
        "trunk_hash": ckpt.state.get("trunk_hash"),
        "sha256": {WEIGHTS_FILE: _sha256(weights), STATE_FILE: _sha256(state)},
        "size_bytes": {WEIGHTS_FILE: len(weights), STATE_FILE: len(state)},
        "figures": f"docs/results/{FIGURES}.json", "floors": str(FLOORS_DIR.relative_to(ROOT)),
        "source": str(ckpt.path), "commit": _git_commit(),
        "installed": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpu": cpu_model()},
    }
    target = PRETRAINED[name].directory
    target.mkdir(parents=True, exist_ok=True)
    (target / PROVENANCE_FILE).unlink(missing_ok=True)  # until the new one is written, the entry reads as absent
    write_bytes_atomic(target / WEIGHTS_FILE, weights)
    write_bytes_atomic(target / STATE_FILE, state)
    write_bytes_atomic(target / PROVENANCE_FILE, (json.dumps(provenance, indent=1) + "\n").encode())
    return target


HEADER = """\
# GENERATED by `python tools/zoo_install.py floors` from {results} ({model}, step {step},
# sha256 {sha}): do not edit. `make reference` / `make reference-install RUN=...` rewrite it.
# The reference model's floors on the {condition} condition, checked by `make test` (tests/zoo/) and by
# `hydranet eval zoo:{name} --suite suites/reference/`. Floor = {rule}; the seed std is the
# metric's standard deviation over {noise} further seeds of this condition at {frames} frames each: how far the
# number moves when the frames are drawn again. Each floor's comment: the value on these frames, then the
# mean +- std over all {seeds} seeds.
"""


def suite_yaml(cond: dict[str, Any], header: str) -> str:
    """The floors suite ``cond["suite"]`` (built by ``benchmarks/reference.py``) as YAML, each threshold
    commented with the figures it came from."""
    suite = cond["suite"]
    flow = lambda v: json.dumps(v)  # noqa: E731 - JSON is YAML's flow style
    lines = [header.rstrip("\n"), f"name: {suite['name']}", f"description: {flow(suite['description'])}",
             f"world: {flow(suite['world'])}", f"scenarios: {flow(suite['scenarios'])}",
             f"seeds: {flow(suite['seeds'])}", f"frames: {suite['frames']}", "tasks:"]
    if cond.get("lights"):  # what the light floors judge
        lines.insert(1, "# Traffic lights labelled on these frames: " + ", ".join(f"{n} {state}" for state, n in
                                                                                cond["lights"].items()) + ".")
    for task, spec in suite["tasks"].items():
        thresholds = spec.get("thresholds") or {}
        if not thresholds:
            lines.append(f"  {task}: {{}}  # no floor: the seed noise leaves none that could fail")
            continue
        lines += [f"  {task}:", "    thresholds:"]
        for metric, text in thresholds.items():
            row = cond["tasks"][task][metric]
            lines.append(f"      {metric}: {flow(text)}  # {row['value']:.3f} here; {row['mean']:.3f} +- "
                         f"{row['std']:.3f} over the seeds")
    return "\n".join(lines) + "\n"


def floors(results: Path, out: Path) -> list[Path]:
    """Write ``out/<condition>.yaml`` for every condition in ``results``; returns the files written (and
    removes any other ``*.yaml`` there)."""
    data = json.loads(results.read_text())
    out.mkdir(parents=True, exist_ok=True)
    written = []
    rel = results.resolve().relative_to(ROOT) if results.resolve().is_relative_to(ROOT) else results
    for condition, cond in data["conditions"].items():
        sha = (data.get("sha256") or "?")[:12]
        header = HEADER.format(results=rel, model=data["model"], step=data["step"], sha=sha,
                               condition=condition, name=data["model"].removeprefix("zoo:"), rule=data["floor_rule"],
                               noise=cond["noise_seeds"][1] - cond["noise_seeds"][0] + 1, frames=cond["frames"],
                               seeds=cond["noise_seeds"][1] - cond["seed"] + 1)
        file = out / f"{condition}.yaml"
        write_bytes_atomic(file, suite_yaml(cond, header).encode())
        written.append(file)
    for stale in sorted(out.glob("*.yaml")):
        if stale not in written:
            stale.unlink()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("install", help="copy a run's checkpoint into the zoo with its provenance")
    a.add_argument("run", help="run directory or checkpoint directory")
    a.add_argument("--name", default="tiny-world")
    a.add_argument("--config", default="configs/reference.yaml", help="the config file that reproduces it")
    a.add_argument("--data-rendered-from-config", metavar="NOTE", default=None,
                   help="the run read a render (shards) of the config's own datasets; NOTE says how it was checked")
    f = sub.add_parser("floors", help="write suites/reference/*.yaml from the recorded figures")
    f.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / f"{FIGURES}.json")
    f.add_argument("--out", type=Path, default=FLOORS_DIR)
    args = ap.parse_args()
    try:
        if args.command == "install":
            print(f"installed {install(args.run, args.name, args.config, args.data_rendered_from_config)}")
        else:
            for file in floors(args.results, args.out):
                print(f"wrote {file}")
    except (ZooError, CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
