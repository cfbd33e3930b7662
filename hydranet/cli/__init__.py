"""Command-line interface: ``hydranet --help``. Each area registers its commands in its own module."""

from hydranet.cli import (  # noqa: F401 - registers commands
    convert,
    data,
    deploy,
    engine,
    predict,
    subgraph,
    suites,
    train,
    view,
    world,
    zoo,
)
from hydranet.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``hydranet`` console script (``pyproject.toml``): run the typer app."""
    app()
