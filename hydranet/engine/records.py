"""What a vacation run writes: the stage order and crash-safe JSON records (write, fsync, rename).

Kept apart from ``vacation.py`` so the stages and the history page can use them without importing
the loop that imports them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydranet.json_files import dumps

STAGES = ("mine", "label", "dataset", "train", "eval", "gate", "export", "promote")


def atomic_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically: temporary file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(dumps(data))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
