"""The typer application every command module registers onto."""

import platform
import sys

import torch
import typer

import hydranet

app = typer.Typer(
    # Rich error panels wrap messages inside a box at 80 columns; in logs and pipes print click's
    # plain one-line "Error: ..." instead (hydranet.console does the same for tables).
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
    name="hydranet",
    help="Build, train, evaluate, mine data for and deploy multi-camera multi-task perception networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Multi-camera, multi-task perception networks: see each command's --help."""


@app.command()
def version() -> None:
    """Print the hydranet, torch and Python versions."""
    typer.echo(f"hydranet {hydranet.__version__}  torch {torch.__version__}  python {platform.python_version()}")
