"""CLI commands: deploy."""

from hydranet.cli.app import app  # noqa: F401
