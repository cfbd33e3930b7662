"""CLI commands: evaluate."""

from hydranet.cli.app import app  # noqa: F401
