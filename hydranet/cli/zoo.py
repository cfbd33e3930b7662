"""CLI command: ``hydranet zoo`` (the pretrained models this installation ships, and how each was made)."""

from __future__ import annotations

import json

import typer

from hydranet.cli.app import app
from hydranet.cli.errors import cli_errors
from hydranet.console import make_console
from hydranet.model import PRETRAINED, ZooError, find_pretrained, verified_directory


@app.command()
def zoo(
    name: str = typer.Argument("list", help="'list' (default): every entry; or an entry's name: its provenance."),
    as_json: bool = typer.Option(False, "--json", help="The list as JSON (an entry's provenance is always JSON)."),
) -> None:
    """The model zoo: pretrained weights shipped inside the package. Use an entry as `zoo:NAME` wherever a
    command takes a checkpoint (eval, gate, report, export, predict, mine, label --teacher, train --from,
    merge, view --model, ...), or in Python as `create_model(NAME or its preset, pretrained=True)`."""
    console = make_console()
    with cli_errors():
        if name != "list":
            entry = find_pretrained(name)
            verified_directory(entry.name)  # a missing or altered file is an error (exit 2) naming it
            console.print_json(json.dumps({"zoo": f"zoo:{entry.name}", "preset": entry.preset,
                                           "description": entry.description, "directory": str(entry.directory),
                                           **entry.provenance()}))
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
