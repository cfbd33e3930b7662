"""The one formatter for pydantic validation errors: ``file: dotted.field: message`` per field.

pydantic's own text leaks its internals: union members appear in the location
(``lighting.literal['day','dusk','night']``), one bad value of a ``A | B`` field becomes one error
per member, and ``str(err)`` ends with "(2 errors)" and a documentation URL. Here a field gets one
line, its location holds only the user's field names, and a union's alternatives are merged:

    configs/demo.yaml: data.datasets.demo.world.lighting: unknown 'noon'; expected 'day', 'dusk', 'night' or 'random'

Every config, manifest, suite and task-option loader formats through ``format_validation_error``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator

__all__ = ["NumbersNotBools", "field_messages", "format_field_messages", "format_validation_error",
           "setting_differences", "unknown_field"]

# Location parts pydantic inserts for union members / validators, not fields the user wrote.
_INTERNAL = re.compile(r"^(literal\[.*\]|function-\w+\[.*\]|[a-z_]+\[.*\]|is-instance\[.*\]|tagged-union\[.*\]|"
                       r"int|float|str|bool|list|dict|tuple|none|union|json-or-python\[.*\])$")
_QUOTED = re.compile(r"'([^']*)'")


def _field(loc: tuple[Any, ...], prefix: str) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and _INTERNAL.match(p))]
    return ".".join(p for p in (prefix, *parts) if p)


def _literal_options(err: dict[str, Any]) -> list[str]:
    expected = str(err.get("ctx", {}).get("expected", ""))
    return _QUOTED.findall(expected) or ([expected] if expected else [])


def _one(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown field (typo?)"
    if kind == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if msg.startswith("Assertion failed, "):
        return msg[len("Assertion failed, "):]
    return msg


def _merge(errors: list[dict[str, Any]]) -> str:
    """One message for every error pydantic raised at one field (the members of a union)."""
    literals = [o for e in errors if e["type"] == "literal_error" for o in _literal_options(e)]
    value = errors[0].get("input")
    shown = repr(value) if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
    if literals and all(e["type"] == "literal_error" for e in errors):
        quoted = [f"'{o}'" for o in dict.fromkeys(literals)]
        choices = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        return f"unknown {shown}; expected {choices}"
    if len(errors) == 1:
        return _one(errors[0])
    alternatives = []
    for e in errors:
        if e["type"] == "literal_error":
            alternatives += [f"'{o}'" for o in _literal_options(e)]
        else:
            alternatives.append(_one(e).removeprefix("Input should be ").removesuffix("."))
    alternatives = list(dict.fromkeys(alternatives))
    return f"expected {' or '.join(alternatives)}, got {shown}"


def field_messages(err: ValidationError, prefix: str = "") -> dict[str, str]:
    """One message per field of ``err``: ``{dotted.field: message}`` in pydantic's order, no internals.

    ``prefix`` is prepended to every field path (e.g. ``model`` when validating that section)."""
    by_field: dict[str, list[dict[str, Any]]] = {}
    for e in err.errors():
        by_field.setdefault(_field(tuple(e["loc"]), prefix), []).append(e)
    return {field: _merge(errors) for field, errors in by_field.items()}


def unknown_field(key: str, known: Iterable[str]) -> str:
    """The message for an unknown ``key`` where ``known`` are the names accepted: ``unknown field (typo?)``, as
    every loader says it, naming the closest known name when one is close (``unknown field (typo of 'image'?)``)."""
    names = [str(k) for k in known]
    same_but_case = [k for k in names if k.lower() == str(key).lower()]  # `k` for `K`: too short for difflib
    close = same_but_case or difflib.get_close_matches(str(key), names, n=1)
    return f"unknown field (typo of {close[0]!r}?)" if close else "unknown field (typo?)"


def format_field_messages(fields: dict[str, str], where: str, sep: str = "\n") -> str:
    """``where: field: message`` for each entry of ``fields`` (joined by ``sep``)."""
    return sep.join(": ".join(p for p in (where, field, message) if p) for field, message in fields.items())


def format_validation_error(err: ValidationError, where: str, prefix: str = "", sep: str = "\n") -> str:
    """``where: field: message`` for each field of ``err`` (joined by ``sep``); no pydantic internals.

    ``prefix`` is prepended to every field path (e.g. ``model`` when validating that section)."""
    return format_field_messages(field_messages(err, prefix), where, sep)


def setting_differences(ours: Any, base: Any, path: str = "", depth: int = 3,
                        names: tuple[str, str] = ("BASE", "this checkpoint")) -> list[str]:
    """Where two settings trees (config or checkpoint dicts) differ: one ``path: <names[0]> value, <names[1]>
    value`` line per differing leaf (``base`` first), nested dicts walked ``depth`` levels down, long values cut to
    80 characters. Says *what* differs when a checkpoint does not fit (``merge``, ``train --from``)."""
    if ours == base:
        return []
    if isinstance(ours, dict) and isinstance(base, dict) and depth > 0:
        return [line for k in sorted(set(ours) | set(base), key=str)
                for line in setting_differences(ours.get(k), base.get(k), f"{path}.{k}" if path else str(k),
                                                depth - 1, names)]

    def short(v: Any) -> str:
        text = repr(sorted(v) if isinstance(v, dict) else v)
        return text if len(text) <= 80 else text[:77] + "..."
    return [f"{path}: {names[0]} {short(base)}, {names[1]} {short(ours)}"]


class NumbersNotBools(BaseModel):
    """Base of hydranet's config models: a YAML ``true``/``false`` where a number is declared is an error naming the
    field (``a number is needed, got true``). pydantic's lax mode reads it as 1/0, so ``train.lr: true`` would train
    at lr 1."""

    @field_validator("*", mode="before")
    @classmethod
    def _a_bool_is_not_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _is_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"a number is needed, got {str(value).lower()}")
        return value


def _is_number(annotation: Any) -> bool:
    """``int``, ``float`` or an optional one (``float | None``)."""
    numbers = {int, float}
    if annotation in numbers:
        return True
    args = set(get_args(annotation)) - {type(None)}
    return get_origin(annotation) in (Union, UnionType) and bool(args) and args <= numbers
