"""Command-line interface: ``hydranet --help``. Each area registers its commands in its own module."""

from hydranet.cli import data, deploy, engine, evaluate, subgraph, train, world  # noqa: F401 - registers commands
from hydranet.cli.app import app


def main() -> None:
    app()
