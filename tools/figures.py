"""Every figure in the README and docs is rendered from JSON the code wrote; this script does the rendering.

The measured results live in ``docs/results/<name>.json``: ``demo.json`` is the ``metrics.json`` of a
``make demo`` run, the others are what a ``benchmarks/*.py`` script printed. A doc holds marked blocks

    <!-- figures:NAME -->
    ...rendered text...
    <!-- /figures -->

whose text is the template ``docs/figures/NAME.md`` with its fields filled from the results: ``{demo.
trained.drivable.miou:.3f}`` is ``docs/results/demo.json``'s ``["trained"]["drivable"]["miou"]``
formatted ``.3f``; a key with other characters is indexed, ``{demo.trained.traffic_light[recall/red]}``.
Besides Python's format specs: ``:min`` (seconds as minutes, one decimal), ``:met>=0.4`` / ``:met<=0.6``
("met" or "not met"), ``:x.2f`` (a ratio with "×"), ``:M`` (millions, "0.5 M"; ``:M.2f`` "0.51 M"), ``:join``
(a list of numbers or words, "16, 32, 64"; ``:join=+`` "p3+p4"), ``:?PREFIX|SUFFIX|SPEC``
(the value, formatted by SPEC, between the two, or nothing when it is null) and ``:if=YES|NO`` (a true/false
result in words). ``null`` (undefined) prints as "n/a".

    python tools/figures.py render           # rewrite every marked block (make figures)
    python tools/figures.py check            # exit 1 naming each block that differs and each typed figure
    python tools/figures.py record NAME -- CMD...   # run CMD, keep the last JSON object it printed
    python tools/figures.py record NAME --file PATH # keep a JSON file (runs/demo/metrics.json)

``record`` adds ``_recorded`` (command, UTC time, git commit, CPU) so a figure says where it came from.

``check`` also refuses typed figures in the README's benchmark table (the table whose header starts
``| benchmark |``), wherever its rows are written: in the README itself or in a template. In the text as
typed -- README.md with every block replaced by its template's literal text, fields left out -- no cell of
a row may hold a number (a digit not glued to letters: ``0.78``, ``3,000``, ``8×128``, ``±32 m``; ``2D``,
``fp32``, ``INT8``, ``AP50`` are names), except the first cell (the command, with its step and size
arguments) and a target in the ``goal`` cell (a number right after ``≥ ≤ < > =``). A measured number
comes from a ``{field}``, so it cannot be typed there by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydranet.json_files import dumps

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
TEMPLATES = ROOT / "docs" / "figures"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


class FigureError(ValueError):
    """A template names a result or field that does not exist, or a block names no template."""


class _Node:
    """Attribute and item access into loaded JSON, naming the path in errors."""

    def __init__(self, value: Any, path: str) -> None:
        self.value, self.path = value, path

    def __getattr__(self, key: str) -> _Node:
        return self[key]

    def __getitem__(self, key: Any) -> _Node:
        v = self.value
        if isinstance(v, dict) and str(key) in v:
            return _Node(v[str(key)], f"{self.path}.{key}")
        if isinstance(v, list) and str(key).lstrip("-").isdigit() and -len(v) <= int(key) < len(v):
            return _Node(v[int(key)], f"{self.path}[{key}]")
        raise FigureError(f"{self.path} has no '{key}'")


class _Results:
    """The namespace templates read: ``name`` -> ``docs/results/name.json``, loaded on first use."""

    def __init__(self, root: Path) -> None:
        self.root, self.cache = root, {}

    def __getitem__(self, name: str) -> _Node:
        if name not in self.cache:
            path = self.root / f"{name}.json"
            try:
                self.cache[name] = json.loads(path.read_text())
            except OSError:
                raise FigureError(f"{path.relative_to(ROOT)}: no such result (record it: tools/figures.py record "
                                  f"{name} ...)") from None
        return _Node(self.cache[name], name)


class _Formatter(string.Formatter):
    def __init__(self, results: _Results) -> None:
        self.results = results

    def get_value(self, key: Any, args: Any, kwargs: Any) -> Any:
        return self.results[key]

    def format_field(self, value: Any, spec: str) -> str:
        v = value.value if isinstance(value, _Node) else value
        if spec.partition("=")[0] == "join" and isinstance(v, list) and not any(isinstance(x, dict | list) for x in v):
            return (spec[5:] if spec.startswith("join=") else ", ").join(str(x) for x in v)
        if isinstance(v, dict | list):
            raise FigureError(f"{value.path}: a {type(v).__name__}, not a number or text")
        if spec.startswith("if="):  # a yes/no result in words: ``{x.identical:if=bit-identical|different}``
            yes, _, no = spec[3:].partition("|")
            return yes if v else no
        if spec.startswith("?"):  # optional text: nothing when the value is null, else PREFIX value SUFFIX
            prefix, suffix, fmt = (spec[1:].split("|") + ["", ""])[:3]
            return "" if v is None else f"{prefix}{format(v, fmt)}{suffix}"
        if v is None:
            return "n/a"
        if spec.startswith("M"):
            return f"{format(v / 1e6, spec[1:] or '.1f')} M"
        if spec == "min":
            return f"{v / 60:.1f}".removesuffix(".0")
        if spec.startswith("x"):
            return f"{format(v, spec[1:] or '.2f')}×"
        m = re.fullmatch(r"met(<=|>=|<|>)(-?[\d.]+)", spec)
        if m:
            op, bound = m.group(1), float(m.group(2))
            ok = {"<=": v <= bound, ">=": v >= bound, "<": v < bound, ">": v > bound}[op]
            return "met" if ok else "not met"
        return format(v, spec)


def render_template(name: str, results: _Results) -> str:
    """The text of ``docs/figures/<name>.md`` with its fields filled (no trailing newline added or lost)."""
    path = TEMPLATES / f"{name}.md"
    try:
        template = path.read_text()
    except OSError:
        raise FigureError(f"block 'figures:{name}': no template {path.relative_to(ROOT)}") from None
    try:
        return _Formatter(results).format(template)
    except FigureError as e:
        raise FigureError(f"{path.relative_to(ROOT)}: {e}") from None


def render_doc(text: str, results: _Results) -> str:
    """``text`` with every marked block's body replaced by its rendered template."""
    return BLOCK.sub(lambda m: m.group(1) + render_template(m.group("name"), results) + m.group(4), text)


def stale_blocks(docs: list[Path] = DOCS, root: Path = RESULTS) -> list[str]:
    """``file: block NAME`` for every marked block whose text is not what its template renders."""
    results, stale = _Results(root), []
    for doc in docs:
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            if m.group("body") != render_template(m.group("name"), results):
                stale.append(f"{doc.relative_to(ROOT)}: block figures:{m.group('name')}")
    return stale


# A number as a reader sees one: digits not glued to a letter, digit or dot on the left nor a letter on the right.
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
# A goal's target: the number right after a comparison (``≥ 20×``, ``≤ 0.02``, ``<= 1e-3`` counts ``1e`` as a name).
TARGET = re.compile(r"(?:[≥≤<>]=?|=)\s*[-+]?\d+(?:[.,]\d+)*(?:e-?\d+)?\s*[×%]?")
MARKER = re.compile(r"<!-- (?:figures:[\w-]+|/figures) -->")
BENCHMARK_TABLE = re.compile(r"^\| *benchmark *\|")


def literal_text(template: str) -> str:
    """``template`` with every replacement field left out (``…`` in its place): the text a person typed."""
    return "".join(literal + ("…" if field is not None else "")
                   for literal, field, _, _ in string.Formatter().parse(template))


def _literal_template(name: str) -> str:
    path = TEMPLATES / f"{name}.md"
    try:
        return literal_text(path.read_text())
    except OSError:
        raise FigureError(f"block 'figures:{name}': no template {path.relative_to(ROOT)}") from None


def typed_figures(doc: Path | None = None) -> list[str]:
    """``file: benchmark table, row R, column C: typed number(s) N`` for every number in the README's benchmark
    table that no field renders (see the module docstring for the rule)."""
    doc = doc or README
    text = BLOCK.sub(lambda m: m.group(1) + _literal_template(m.group("name")) + m.group(4), doc.read_text())
    lines, found = text.splitlines(), []
    for start, line in enumerate(lines):
        if not BENCHMARK_TABLE.match(line):
            continue
        header = _cells(line)
        for row in lines[start + 1:]:
            if MARKER.fullmatch(row):  # a block may hold some of the rows: the rows around it still count
                continue
            if not row.startswith("|"):
                break
            cells = _cells(row)
            if all(set(c) <= set("-: ") for c in cells):  # the |---| separator
                continue
            for column, cell in zip(header[1:], cells[1:], strict=False):
                checked = TARGET.sub(" ", cell) if column.strip().lower() == "goal" else cell
                numbers = NUMBER.findall(checked)
                if numbers:
                    found.append(f"{doc.relative_to(ROOT)}: benchmark table, row {cells[0].strip()}, column "
                                 f"'{column.strip()}': typed number(s) {', '.join(numbers)}")
    return found


def _cells(row: str) -> list[str]:
    """The cells of a Markdown table row (an escaped ``\\|`` stays inside its cell)."""
    return re.split(r"(?<!\\)\|", row.strip().removeprefix("|").removesuffix("|"))


def render(docs: list[Path] = DOCS, root: Path = RESULTS) -> list[Path]:
    """Rewrite every doc whose blocks changed; returns the docs written."""
    results, written = _Results(root), []
    for doc in docs:
        text = doc.read_text()
        new = render_doc(text, results)
        if new != text:
            doc.write_text(new)
            written.append(doc)
    return written


def last_json_object(text: str) -> Any:
    """The last top-level JSON object in ``text`` (a benchmark's result after any log lines)."""
    decoder, found = json.JSONDecoder(), None
    for m in re.finditer(r"^\{", text, re.M):
        try:
            found, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
    if found is None:
        raise FigureError("the command printed no JSON object")
    return found


def _provenance(command: str) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    return {"command": command, "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit.stdout.strip() or None, "cpu": cpu}


def record(name: str, command: list[str] | None = None, file: Path | None = None) -> Path:
    """Write ``docs/results/<name>.json`` from ``command``'s last printed JSON object or from ``file``."""
    if file is not None:
        data, how = json.loads(file.read_text()), f"copy of {file}"
    else:
        run = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if run.returncode != 0:
            raise FigureError(f"{' '.join(command)} exited {run.returncode}")
        data, how = last_json_object(run.stdout), " ".join(command)
    data = {**data, "_recorded": _provenance(how)}
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps(data) + "\n")  # standard JSON: a benchmark's NaN (undefined) is stored as null
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("render", help="rewrite every marked block from docs/results/*.json")
    sub.add_parser("check", help="exit 1 if a marked block differs from what its template renders, or a number "
                                 "in the README's benchmark table is typed instead of rendered")
    rec = sub.add_parser("record", help="store a result: the last JSON object a command prints, or a file")
    rec.add_argument("name")
    rec.add_argument("--file", type=Path)
    rec.add_argument("command", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.verb == "render":
            for doc in render():
                print(f"rendered {doc.relative_to(ROOT)}")
        elif args.verb == "check":
            typed = typed_figures()  # first: it needs no result, so it reports even when a template cannot render
            for line in typed:
                print(f"typed: {line} (record the result and render it from a template field)")
            stale = stale_blocks()
            for line in stale:
                print(f"stale: {line} (python tools/figures.py render)")
            return 1 if stale or typed else 0
        else:
            if not args.command and args.file is None:
                parser.error("record needs a command after -- or --file")
            print(f"wrote {record(args.name, args.command or None, args.file).relative_to(ROOT)}")
    except FigureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
