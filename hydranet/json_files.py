"""The one way hydranet writes JSON: standard JSON (RFC 8259) that any reader accepts.

Python's ``json`` writes ``NaN``/``Infinity`` for non-finite floats, which is not JSON (browsers, ``jq`` and
most other languages refuse the file). Every JSON file and JSON line hydranet writes goes through
``dumps`` here: a non-finite float (a metric undefined on these frames, a diverged loss) becomes ``null``,
numpy and torch scalars and arrays become numbers and lists, paths become strings, and anything else a
``json`` encoder cannot write is an error (``allow_nan=False`` guards the result). Readers read ``null``
as "not defined" (``docs/eval.md``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["dumps", "to_jsonable", "write_json"]


def to_jsonable(x: Any) -> Any:
    """``x`` with non-finite floats as ``None``, numpy/torch scalars and arrays as Python numbers and lists,
    tuples as lists, ``Path`` as ``str`` and mapping keys as ``str``; other values unchanged."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def dumps(obj: Any, indent: int | None = 1) -> str:
    """Standard JSON text of ``obj`` (``to_jsonable`` first); ``indent=None`` gives one line (JSON lines).
    Raises ``TypeError`` for a value JSON cannot hold."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write ``dumps(obj)`` (plus a newline) to ``path`` through a temporary file and a rename, so a reader
    never sees half a file; creates the parent directory; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(dumps(obj, indent) + "\n")
    os.replace(tmp, path)
    return path
