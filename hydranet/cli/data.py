"""CLI commands: data."""

from hydranet.cli.app import app  # noqa: F401
