"""CLI commands: train."""

from hydranet.cli.app import app  # noqa: F401
