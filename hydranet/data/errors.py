"""The errors of the data layer: a shard, manifest or stored sample that cannot be used.

Kept apart from ``manifest.py`` so that storage (``storage.py``) and the manifest can both raise
them without importing each other. ``hydranet.data.manifest`` re-exports both names.
"""

from __future__ import annotations

import os


class ShardError(Exception):
    """A shard directory, shard file or sample is missing, corrupt or inconsistent with its manifest.

    ``path`` is the file concerned and ``key`` the sample (None when the problem is not one sample's)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, key: str | None = None):
        self.path = str(path) if path is not None else None
        self.key = key
        where = ", ".join(p for p in (self.path, f"sample {key}" if key is not None else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ShardManifestError(ShardError):
    """The manifest is missing, unreadable or invalid."""


class NetworkError(ShardError):
    """A remote store did not answer in time, broke off an answer, or answered wrongly (e.g. ignored the
    ``Range`` of a ranged read), after the bounded retries; the message names the URL. The work failed
    (exit 1): the input itself may be fine."""
