"""CLI commands: subgraph."""

from hydranet.cli.app import app  # noqa: F401
