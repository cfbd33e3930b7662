"""The typer application every command module registers onto."""

import platform

import torch
import typer

import hydranet

app = typer.Typer(
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
