"""Read a YAML file that must hold a mapping (a config, suite, pipeline or world file), or say why not.

Every loader of a user's YAML file reads it here, so the three ways it can fail give the same
one-line messages everywhere, each naming the file: it cannot be read (the OS error), it is not
valid YAML (the parser's position), or it holds something other than a mapping (what it holds).
The loader's own error class is raised, so a CLI maps it to its usual exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_yaml_mapping"]


def read_yaml_mapping(path: str | Path, error: type[Exception] = ValueError, expected: str = "a mapping",
                      empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The mapping in YAML file ``path``. Raises ``error`` naming the file when it cannot be read, is not
    valid YAML, or holds anything but a mapping (``expected`` says what it should hold). An empty file is
    ``empty`` when given (a copy), else an error too."""
    try:
        tree = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from None
    except RecursionError:
        raise error(f"{path}: nested too deep to read (refused)") from None
    if tree is None and empty is not None:
        return dict(empty)
    if not isinstance(tree, dict):
        raise error(f"{path}: expected {expected}, got {type(tree).__name__}")
    return tree
