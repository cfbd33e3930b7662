"""CLI commands: world."""

from hydranet.cli.app import app  # noqa: F401
