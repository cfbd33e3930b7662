"""``hydranet convert KIND --help``: the help of ``convert`` followed by KIND's own options.

A source's options are its pydantic options model (``hydranet.data.sources``); each one's text is the
field's ``description`` or, failing that, the ``# comment`` after the field in the model's source.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hydranet.cli.guard import GuardedCommand
from hydranet.data import SOURCES, SourceConfigError, source_class

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


def _field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the ``# comment`` after its declaration, over the model's bases (subclass wins)."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):  # built without source (frozen apps): descriptions only
            continue
        out.update(m.groups() for line in lines if (m := _FIELD_COMMENT.match(line)))
    return out


def _type_name(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return name or str(annotation).replace("typing.", "")


def _source_option_rows(kind: str, skip: set[str]) -> list[tuple[str, str]]:
    """``(--option TYPE, description [default])`` rows of source ``kind``'s options, leaving out ``kind``
    and the names in ``skip`` (options ``convert`` takes itself). Raises ``SourceConfigError`` for an
    unknown kind."""
    model = source_class(kind).Options
    comments = _field_comments(model)
    rows = []
    for name, field in model.model_fields.items():
        if name == "kind" or name in skip:
            continue
        text = field.description or comments.get(name, "")
        if field.is_required():
            text += "  [required]"
        else:
            default = field.default_factory() if field.default_factory is not None else field.default
            if default is not None and default is not PydanticUndefined and len(repr(default)) <= 60:
                text += f"  [default: {default}]"
        rows.append((f"--{name.replace('_', '-')} {_type_name(field.annotation)}", text.strip()))
    return rows


class ConvertCommand(GuardedCommand):
    """``convert``: its help also lists the options of the source named by KIND (``convert KIND --help``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Click's parsing, after noting the source KIND among raw ``args`` when ``--help`` is asked for."""
        if "--help" in args:  # help is eager: KIND is not parsed yet, so find it among the raw arguments
            takes_value = {o for p in self.params if isinstance(p, typer.core.TyperOption) and not p.is_flag
                           for o in p.opts}
            tokens = iter(args)
            for token in tokens:
                if token in takes_value:
                    next(tokens, None)
                elif not token.startswith("-"):
                    ctx.meta["convert_kind"] = token
                    break
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """``convert``'s own help, then "Options of source 'KIND'" read from the source's options model."""
        super().format_help(ctx, formatter)  # rich help prints now; the text below is echoed after it
        kind = ctx.meta.get("convert_kind")
        own = {p.name for p in self.params if p.name}
        try:
            rows = _source_option_rows(kind, own) if kind else None
        except SourceConfigError:
            rows = None
        if rows is None:
            formatter.write_paragraph()
            formatter.write_text(f"{'Unknown source kind ' + repr(kind) + '. ' if kind else ''}Registered kinds: "
                                 f"{', '.join(sorted(SOURCES))}. `hydranet convert KIND --help` lists KIND's options.")
            return
        with formatter.section(f"Options of source '{kind}' (after KIND; values are YAML)"):
            formatter.write_dl(rows)
