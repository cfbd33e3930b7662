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
from hydranet.train import exit_torchrun_worker

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``hydranet`` console script (``pyproject.toml``) and ``python -m hydranet``: run the typer
    app. Under torchrun a worker then ends without the interpreter's teardown (``exit_torchrun_worker``: gloo can
    abort a rank at exit), here, after the command's own clean-up has run: its output lock and lock files
    (``hydranet.cli.guard``) are released as in a single process."""
    try:
        app()  # click's standalone mode always ends in SystemExit
    except SystemExit as e:
        exit_torchrun_worker(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)
        raise
