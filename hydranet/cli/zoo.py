"""CLI command: ``hydranet zoo`` (the pretrained models this installation ships, and how each was made)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from hydranet.cli.app import app
from hydranet.cli.errors import FAILED, cli_errors, fail
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
            record = _record(entry)
            if as_json:
                console.print_json(json.dumps(record))
            else:
                _print_lines(console, _entry_lines(record, full=True))
            return
        records = []
        for entry in PRETRAINED.values():
            try:
                verified_directory(entry.name)
                records.append(_record(entry))
            except ZooError as e:  # listed with what of its record still reads (only a weights file may be damaged)
                try:
                    provenance = entry.provenance()
                except (OSError, ValueError, ZooError):
                    provenance = {}
                records.append(_record(entry, provenance=provenance, status=str(e)))
        if as_json:
            console.print_json(json.dumps([{
                "name": r["zoo"], "preset": r["preset"], "description": r["description"], "step": r.get("step"),
                "config": r.get("config"), "figures": r.get("figures"), "floors": r.get("floors"),
                "sha256": (r.get("sha256") or {}).get("model.safetensors"), "status": r["status"]} for r in records]))
        else:
            # One block per entry rather than a table: the description and a sha256 make a table wider than any
            # terminal, and a pipe (no width) would get one very long line.
            console.print("hydranet model zoo: use an entry as zoo:NAME in any command, or create_model(NAME or its "
                          "preset, pretrained=True); `hydranet zoo NAME` prints its provenance")
            for r in records:
                console.print()
                _print_lines(console, _entry_lines(r, full=False))
        # Every entry is listed; a damaged one (a file missing or altered) is named with why, and the listing
        # fails (exit 1): an installation whose shipped weights cannot be used is not in order.
        damaged = [r["status"] for r in records if r["status"] != "ok"]
        if damaged:
            raise fail(f"{len(damaged)} damaged zoo entr{'y' if len(damaged) == 1 else 'ies'}, unusable until fixed: "
                       + "; ".join(damaged), FAILED)


def _record(entry: Any, provenance: dict[str, Any] | None = None, status: str = "ok") -> dict[str, Any]:
    """An entry's name, preset, description, directory and status, with its provenance record's fields."""
    return {"zoo": f"zoo:{entry.name}", "preset": entry.preset, "description": entry.description,
            "directory": str(entry.directory), "status": status,
            **(entry.provenance() if provenance is None else provenance)}


def _entry_lines(r: dict[str, Any], full: bool) -> list[str]:
    """An entry as readable lines: the list's block (``full=False``), or also how to use and reproduce it
    and what it was trained on (``hydranet zoo NAME``)."""
    # sha256 of every file, against its record; a damaged entry's reason without its name (the line begins with it)
    status = ", files verified" if r["status"] == "ok" else f", DAMAGED: {r['status'].removeprefix(r['zoo'] + ': ')}"
    lines = [f"{r['zoo']}  (preset {r['preset']}, {r.get('step') or '-'} steps{status})", f"  {r['description']}"]
    if full:
        lines += [
            f"  use: {r['zoo']} wherever a command takes a checkpoint, or "
            f"create_model({r['zoo'].removeprefix('zoo:')!r}, pretrained=True)",
            f"  reproduce: {r.get('reproduce', '-')}",
            f"  trained: {r.get('step', '-')} steps at batch {r.get('batch_size', '-')} "
            f"({r.get('samples_seen', '-')} samples) in {float(r.get('train_seconds') or 0) / 60:.1f} min on "
            f"{r.get('threads', '-')} thread(s), commit {str(r.get('commit', '-'))[:10]}",
            f"  data: {_data_line(r.get('data'))}"]
    lines.append(f"  config {r.get('config') or '-'} · figures {r.get('figures') or '-'} · "
                 f"floors {r.get('floors') or '-'}" + (f" · {r.get('parameters', '-')} parameters" if full else ""))
    recorded = "" if r["status"] == "ok" else "recorded "  # a damaged file's own hash differs from its record's
    lines.append(f"  {recorded}sha256 (model.safetensors) {(r.get('sha256') or {}).get('model.safetensors', '-')}")
    if full:
        lines.append(f"  files: {r['directory']}   (--json: the whole provenance record)")
    return lines


def _print_lines(console: Console, lines: list[str]) -> None:
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
