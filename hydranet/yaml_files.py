"""Read a YAML file that must hold a mapping (a config, suite, pipeline or world file), or say why not.

Every loader of a user's YAML file reads it here, so the ways it can fail give the same one-line
messages everywhere, each naming the file: it cannot be read (the OS error) or is not UTF-8 text, it is
not valid YAML (``yaml_error_message``: ``FILE:LINE:COLUMN: problem``), a mapping gives a key twice (PyYAML
would keep the last silently), or it holds something other than a mapping (what it holds). The loader's own
error class is raised, so a CLI maps it to its usual exit code 2.

``yaml_error_message`` is also the one formatter of a YAML error in a value given on the command line
(``--set KEY=VALUE``, ``--world KEY=VALUE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_yaml_mapping", "yaml_error_message"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the last one silently, so
    ``steps: 1000`` followed later by ``steps: 0`` would train with 0 and name no line. Merge keys (``<<``) keep
    their override meaning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base constructor names it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"key {key!r} given twice (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _position(text: str, index: int) -> str:
    """``LINE:COLUMN`` (1-based) of character ``index`` of ``text``."""
    line, column = text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)
    return f"{line}:{column}"


def yaml_error_message(e: yaml.YAMLError, where: str, text: str | None = None) -> str:
    """One line for the YAML error ``e`` of the text ``where`` names: ``where:LINE:COLUMN: problem (not valid
    YAML, context from LINE:COLUMN)``, positions 1-based, from the parser's ``problem_mark``/``context_mark``
    (PyYAML's own text spans four lines with a caret and quotes ``"<unicode string>"``). A character the
    reader refuses is placed through ``text`` (the parsed text) when given; an error without a position
    (an emitter's) is ``where: message``."""
    if isinstance(e, yaml.MarkedYAMLError) and (e.problem_mark is not None or e.context_mark is not None):
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context
        context = "not valid YAML"
        if e.problem and e.context:
            start = f" from {e.context_mark.line + 1}:{e.context_mark.column + 1}" if e.context_mark else ""
            context += f", {e.context}{start}"
        note = f"; {e.note}" if e.note else ""
        return f"{where}:{mark.line + 1}:{mark.column + 1}: {problem} ({context}){note}"
    if isinstance(e, yaml.reader.ReaderError):
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        if text is None:
            return f"{where}: unacceptable character {char} at character {e.position + 1}: {e.reason} (not valid YAML)"
        return f"{where}:{_position(text, e.position)}: unacceptable character {char}: {e.reason} (not valid YAML)"
    return f"{where}: not valid YAML ({'; '.join(line.strip() for line in str(e).splitlines() if line.strip())})"


def _yaml_content(text: str) -> bool:
    """Whether ``text`` holds anything but whitespace, comments and document markers."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return any(line and line not in ("---", "...") for line in lines)


def read_yaml_mapping(path: str | Path, error: type[Exception] = ValueError, expected: str = "a mapping",
                      empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The mapping in YAML file ``path``. Raises ``error`` naming the file when it cannot be read, is not
    UTF-8 text, is not valid YAML (``yaml_error_message``: file, line and column) or holds anything but a
    mapping (``expected`` says what it should hold). An empty file (whitespace and comments only, or a bare
    null) is ``empty`` when given (a copy), else ``error``: "FILE: empty file (expected ...)", or "FILE: holds only
    null (expected ...)" for a bare null (``~``, ``null``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at byte {e.start})") from None
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise error(yaml_error_message(e, str(path), text)) from None
    except RecursionError:
        raise error(f"{path}: nested too deep to read (refused)") from None
    if tree is None:  # whitespace and comments only, or a bare null
        if empty is not None:
            return dict(empty)
        what = "empty file" if not _yaml_content(text) else "holds only null"
        raise error(f"{path}: {what} (expected {expected})")
    if not isinstance(tree, dict):
        raise error(f"{path}: expected {expected}, got {type(tree).__name__}")
    return tree
