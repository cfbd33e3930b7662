"""Architecture figures of the `hydranet` package, computed by walking every module's AST.

Prints one JSON object (issue 10's six measures):

- `frame_path_files`: hydranet files in the import closure (module- and function-level imports,
  following the files the import statements name) of the exporter (`hydranet.deploy.export`) and
  of the `Sample` contract (`hydranet.data.sample`), i.e. what a newcomer opens to follow a camera
  frame of the rig through the model to the ONNX graph. `__init__.py` files that only re-export
  are not counted.
- `function_level_imports`: internal import statements inside a function or method, and their
  share of all internal import statements.
- `package_cycles` / `file_cycles`: strongly connected components (size > 1) of the package-level
  and file-level import graphs (all imports, function-level included).
- `files_over_400_lines`.
- `public_without_docstring`: module-level public classes and functions (name not starting with
  `_`), plus public methods of public classes (dunder methods and `forward` overrides excepted),
  that have no docstring.
- `duplicate_pairs`: the pair count printed by the `duplicates --repo hydranet` tool (null when
  the tool is not installed).

Usage: `python benchmarks/architecture.py [--root PATH] [--list]` (`--list` adds the names behind
each figure).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

FRAME_PATH_ENDS = ("hydranet.data.sample", "hydranet.deploy.export")
MAX_FILE_LINES = 400


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of `path` (a .py file under `root`, the repository root)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve_import(node: ast.ImportFrom | ast.Import, module: str, is_package: bool) -> list[str]:
    """Absolute dotted names an import statement refers to (modules or `module.name`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


class ImportCollector(ast.NodeVisitor):
    """Collects every import statement of one module with whether it sits inside a function."""

    def __init__(self) -> None:
        self.depth = 0
        self.imports: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        # `if TYPE_CHECKING:` imports exist for annotations only; they never run.
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.imports.append((node, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.imports.append((node, self.depth > 0))


def collect(root: Path) -> dict[str, dict]:
    """Per module: path, line count, tree and internal imports `[(target_module, in_function)]`."""
    files = sorted((root / "hydranet").rglob("*.py"))
    modules = {module_name(p, root): p for p in files}
    info: dict[str, dict] = {}
    for name, path in modules.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        collector = ImportCollector()
        collector.visit(tree)
        internal: list[tuple[str, bool]] = []
        for node, in_function in collector.imports:
            targets = resolve_import(node, name, path.name == "__init__.py")
            hits = [t for t in targets if t in modules]
            # `from hydranet.x import y`: y is a module if it is one, else a name in hydranet.x.
            submodules = [t for t in hits[1:]] if isinstance(node, ast.ImportFrom) else hits
            chosen = submodules or hits[:1]
            for target in chosen:
                internal.append((target, in_function))
        info[name] = {"path": path, "lines": len(text.splitlines()), "tree": tree, "imports": internal}
    return info


def package_of(module: str) -> str:
    """The layer a module belongs to: `hydranet.<pkg>` for subpackages, the module itself otherwise."""
    parts = module.split(".")
    return ".".join(parts[:2])


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's SCCs of size > 1 (cycles), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def frame_path(info: dict[str, dict]) -> list[str]:
    """Modules in the import closure of FRAME_PATH_ENDS, re-export-only `__init__` files left out."""
    seen: set[str] = set()
    todo = [m for m in FRAME_PATH_ENDS if m in info]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        # What a reader opens: the files named by import statements (a package's `__init__` only
        # when the package itself is imported), not every module Python happens to run.
        todo.extend(t for t, _ in info[m]["imports"])
    files = []
    for m in sorted(seen):
        if info[m]["path"].name == "__init__.py" and only_reexports(info[m]["tree"]):
            continue
        files.append(m)
    return files


def only_reexports(tree: ast.Module) -> bool:
    """True when a module body is docstring, imports and `__all__` only."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets):
            continue
        return False
    return True


def missing_docstrings(info: dict[str, dict]) -> tuple[int, list[str]]:
    """(public API count, names without a docstring)."""
    total = 0
    missing = []
    for m, entry in sorted(info.items()):
        for node in entry["tree"].body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            total += 1
            if ast.get_docstring(node) is None:
                missing.append(f"{m}.{node.name}")
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        continue
                    if item.name.startswith("_") or item.name == "forward":
                        continue
                    total += 1
                    if ast.get_docstring(item) is None:
                        missing.append(f"{m}.{node.name}.{item.name}")
    return total, missing


def duplicate_pairs(root: Path) -> int | None:
    """Pair count from the `duplicates` tool, or None when it is not installed."""
    tool = shutil.which("duplicates")
    if tool is None:
        return None
    result = subprocess.run([tool, "--repo", "hydranet"], cwd=root, capture_output=True, text=True, check=False)
    first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
    if first.startswith("no duplicates"):
        return 0
    match = re.match(r"(\d+) pairs?", first)
    return int(match.group(1)) if match else None


def measure(root: Path, with_lists: bool = False) -> dict:
    """All six figures for the checkout at `root` (the folder holding `hydranet/`)."""
    info = collect(root)
    statements = [(m, t, f) for m, e in info.items() for t, f in e["imports"]]
    in_function = [(m, t) for m, t, f in statements if f]
    package_graph: dict[str, set[str]] = {}
    file_graph: dict[str, set[str]] = {}
    for m, t, _ in statements:
        if package_of(m) != package_of(t):
            package_graph.setdefault(package_of(m), set()).add(package_of(t))
        if m != t and not t.startswith(m + "."):
            file_graph.setdefault(m, set()).add(t)
    long_files = sorted(
        (str(e["path"].relative_to(root)), e["lines"]) for e in info.values() if e["lines"] > MAX_FILE_LINES
    )
    path_files = frame_path(info)
    public, missing = missing_docstrings(info)
    package_cycles = strongly_connected(package_graph)
    # file cycles through a package __init__ re-export are package-level effects; report real files.
    file_cycles = strongly_connected(file_graph)
    out = {
        "frame_path_files": len(path_files),
        "internal_imports": len(statements),
        "function_level_imports": len(in_function),
        "function_level_share": round(len(in_function) / max(1, len(statements)), 3),
        "package_cycles": len(package_cycles),
        "file_cycles": len(file_cycles),
        "files_over_400_lines": len(long_files),
        "public_api": public,
        "public_without_docstring": len(missing),
        "duplicate_pairs": duplicate_pairs(root),
    }
    if with_lists:
        out["lists"] = {
            "frame_path": path_files,
            "package_cycles": package_cycles,
            "file_cycles": file_cycles,
            "files_over_400_lines": long_files,
            "function_level_imports": sorted({f"{m} -> {t}" for m, t in in_function}),
            "public_without_docstring": missing,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--list", action="store_true", help="add the names behind each figure")
    args = parser.parse_args()
    print(json.dumps(measure(args.root, args.list), indent=2))


if __name__ == "__main__":
    main()
