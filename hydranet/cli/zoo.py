"""CLI command: ``hydranet zoo`` (the pretrained models this installation ships, and how each was made)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from hydranet.cli.app import app
from hydranet.cli.errors import cli_errors
from hydranet.console import make_console
from hydranet.model import PRETRAINED, ZooError, find_pretrained, verified_directory


@app.command()
def zoo(
    name: str = typer.Argument("list", help="'list' (default): every entry; or an entry's name: its provenance."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (an entry's whole provenance record)."),
) -> None:
    """The model zoo: pretrained weights shipped inside the package. Use an entry as `zoo:NAME` wherever a
    command takes a checkpoint (eval, gate, report, export, predict, mine, label --teacher, train --from,
    merge, view --model, ...), or in Python as `create_model(NAME or its preset, pretrained=True)`."""
    console = make_console()
    with cli_errors():
        if name != "list":
            entry = find_pretrained(name)
            verified_directory(entry.name)  # a missing or altered file is an error (exit 2) naming it
            record = {"zoo": f"zoo:{entry.name}", "preset": entry.preset, "description": entry.description,
                      "directory": str(entry.directory), **entry.provenance()}
            if as_json:
                console.print_json(json.dumps(record))
            else:
                _print_entry(console, record)
            return
        rows = []
        for entry in PRETRAINED.values():
            try:
                verified_directory(entry.name)
                prov, status = entry.provenance(), "ok"
            except ZooError as e:
                prov, status = {}, str(e)
            rows.append({"name": f"zoo:{entry.name}", "preset": entry.preset, "description": entry.description,
                         "step": prov.get("step"), "config": prov.get("config"), "figures": prov.get("figures"),
                         "floors": prov.get("floors"), "sha256": prov.get("sha256", {}).get("model.safetensors"),
                         "status": status})
        if as_json:
            console.print_json(json.dumps(rows))
            return
        # One block per entry rather than a table: the description and a sha256 make a table wider than any
        # terminal, and a pipe (no width) would get one very long line.
        console.print("hydranet model zoo: use an entry as zoo:NAME in any command, or "
                      "create_model(NAME or its preset, pretrained=True); `hydranet zoo NAME` prints its provenance")
        for r in rows:
            console.print(f"\n{r['name']}  (preset {r['preset']}, {r['step'] or '-'} steps, {r['status']})",
                          markup=False)
            console.print(f"  {r['description']}", markup=False)
            console.print(f"  config {r['config'] or '-'} · figures {r['figures'] or '-'}", markup=False)
            console.print(f"  sha256 (model.safetensors) {r['sha256'] or '-'}", markup=False)


def _print_entry(console: Console, r: dict[str, Any]) -> None:
    """One entry's provenance as readable lines: how to use it, how to reproduce it, what it was trained on."""
    lines = [
        f"{r['zoo']}  (preset {r['preset']})",
        f"  {r['description']}",
        f"  use: {r['zoo']} wherever a command takes a checkpoint, or create_model({r['name']!r}, pretrained=True)",
        f"  reproduce: {r.get('reproduce', '-')}",
        f"  trained: {r.get('step', '-')} steps at batch {r.get('batch_size', '-')} "
        f"({r.get('samples_seen', '-')} samples) in {float(r.get('train_seconds') or 0) / 60:.1f} min on "
        f"{r.get('threads', '-')} thread(s), commit {str(r.get('commit', '-'))[:10]}",
        f"  data: {_data_line(r.get('data'))}",
        f"  figures {r.get('figures', '-')} · floors {r.get('floors', '-')} · {r.get('parameters', '-')} parameters",
        f"  sha256 (model.safetensors) {(r.get('sha256') or {}).get('model.safetensors', '-')}",
        f"  files: {r['directory']}   (--json: the whole provenance record)",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False)


def _data_line(data: Any) -> str:
    """``name: kind (world seed S, N scenes x F frames)`` per training dataset of a provenance record."""
    if not isinstance(data, dict) or not data:
        return "-"
    parts = []
    for name, ds in data.items():
        ds = ds if isinstance(ds, dict) else {}
        world, kind = ds.get("world") or {}, ds.get("kind", "?")
        detail = (f" (world seed {world.get('seed')}, {world.get('num_scenes')} scenes x "
                  f"{world.get('frames_per_scene')} frames)" if world else "")
        parts.append(f"{name}: {kind}{detail}")
    return "; ".join(parts)
