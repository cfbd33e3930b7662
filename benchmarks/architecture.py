"""Architecture figures of the `hydranet` package, computed by walking every module's AST.

Prints one JSON object (the architecture issues' measures):

- `frame_path_files` (static): hydranet files in the import closure (module- and function-level
  imports, following the files the import statements name) of the exporter
  (`hydranet.deploy.export`) and of the `Sample` contract (`hydranet.data.sample`). `__init__.py`
  files that only re-export are not counted. This over-counts (every file an import drags in, used
  or not) and under-counts (plug-ins loaded by name, e.g. the task files, are not import statements).
- `runtime_path_files` (measured, the honest figure): the hydranet files whose functions actually
  run while one frame goes rig -> `Sample` (validated, with labels) -> `collate` -> `create_model` ->
  forward -> every task's loss -> `export_onnx`, recorded with `sys.setprofile` in a fresh interpreter,
  for a 1-task model (`objects3d`: cameras, fusion and a BEV head) and for the all-task model (tiny
  preset, 64x128, default 8-camera rig). Every hydranet file with a function call counts (`__init__.py`
  and helper files included); module bodies run at import time do not. Where the frame comes from (the
  synthetic world's renderer, a source reader) is upstream of the `Sample` contract and not traced.
- `frame_files` (measured): of those, the files whose functions ran with the frame in hand — validating and
  collating the `Sample`, the forward pass and the losses, and the `forward`s the ONNX export traces; building
  the rig and the model, and writing the manifest, are not the frame's path.
- `export_route` (measured): the route train -> checkpoint -> export. A 2-step `run_training` on the
  synthetic world writes a checkpoint; a fresh interpreter then runs `export_checkpoint` on it: the hydranet
  files whose functions run during the export (`files_run`), the hydranet modules imported by then
  (`modules_imported`) and those of them in `world/` or a data-vs-model compat module (`world_or_compat`:
  the export must take the rig from the model's setup, never rebuild it from the training data).
- `bev_grid_forms` (static): the places that hold a BEV grid of their own — classes declaring the grid's
  fields (`x_range`, `y_range`, `cell`: a grid type) and classes other than `Setup` (its one home) that
  declare a `grid` field or keep `self.grid`, torch modules excepted (network layers built from the grid,
  as a convolution is built from its kernel size).
- `rig_rebuilds` (static): calls that build a rig or a camera (`Rig(`, `Camera(`, `CameraSpec(`,
  `CameraConfig(`, `default_rig(`, `rig_of_frame(`, `Rig.from_dict(`) outside the rig's home
  (`hydranet/setup.py`) and outside a source's own `setup` (a reader reporting the rig its calibration
  describes): every other one rebuilds a rig that should have travelled.
- `wings`: how many wings the packages are grouped in (`WINGS` below, drawn in docs/design.md; a package
  imports only its own wing and the wings to its left) and `package_levels`: the longest chain of package
  imports + 1 (the number of tiers a strict ladder of these packages would need).
- `predictor_loops`: the modules that run a network over frames — they call a model's forward entry
  point (`model(...)`, `forward_step`, `forward_features`, a graph's `run`/`run_step`, and the entry
  points of earlier layouts: `forward_batch`, `stream`, `forward_from_features`, `step_from_features`,
  calling a `DeployedModel`) — outside the model itself (`hydranet/model/`, the ONNX runtime
  `deploy/runtime.py`, the graphs traced for export `deploy/export.py`, `deploy/streaming.py`) and the
  training step (`train/trainer.py`, `clips.py`, `subgraph.py`, `distributed.py`).
- `registry_mechanisms`: the implementations that register plug-ins by name: functions named
  `register*` (decorators nested in them included) that store into a mapping. `hydranet.data.labels`
  (the label formats of the `Sample` contract, which tasks declare) is not a plug-in registry and is
  left out. `plugin_loaders`: the modules that load modules for their side effects — calling
  `entry_points`, `pkgutil.iter_modules` or `importlib.import_module`, importing a hydranet package
  inside a function, or importing a hydranet module whose name they never use (registration by import).
- `cross_package_imports_outside_all`: imports of another package that name one of its modules
  (`from hydranet.data.sample import ...`) or a name not in its `__all__`; `packages_without_all`.
- `function_level_imports`: internal import statements inside a function or method, and their
  share of all internal import statements.
- `package_cycles` / `file_cycles`: strongly connected components (size > 1) of the package-level
  and file-level import graphs (all imports: function-level and `if TYPE_CHECKING:` ones included; a name
  imported through a package's `__all__` is an edge to the module that defines it).
- `files_over_400_lines`.
- `public_without_docstring`: module-level public classes and functions (name not starting with
  `_`), plus public methods of public classes (dunder methods and `forward` overrides excepted),
  that have no docstring.
- `duplicate_pairs`: the pair count printed by the `duplicates --repo hydranet` tool (null when
  the tool is not installed).

Usage: `python benchmarks/architecture.py [--root PATH] [--list] [--static-only]` (`--list` adds the
names behind each figure; `--static-only` skips the traced runs, ~1 min).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FRAME_PATH_ENDS = ("hydranet.data.sample", "hydranet.deploy.export")
# Packages by wing, left to right: a package imports its own wing and the wings to its left, never one to its
# right (tests/test_architecture.py enforces it; docs/design.md draws it).
WINGS: dict[str, tuple[str, ...]] = {
    "core": ("hydranet", "limits", "outputs", "geometry", "config_errors", "yaml_files", "json_files", "console",
             "registry", "setup"),
    "data": ("data", "world", "datasets"),
    "network": ("metrics", "viz", "tasks", "model", "checkpoint"),
    "loops": ("eval", "train", "deploy", "engine", "predict"),
    "cli": ("cli", "__main__"),
}
MAX_FILE_LINES = 400
ALL_TASKS = ("detection2d", "traffic_light", "drivable", "lanes", "depth", "bev_semantic", "objects3d")
ONE_TASK = ("objects3d",)


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of `path` (a .py file under `root`, the repository root)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class ImportCollector(ast.NodeVisitor):
    """Collects every import statement of one module with whether it sits inside a function (an
    ``if TYPE_CHECKING:`` import is an import like any other: it ties the two files together)."""

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

    def visit_Import(self, node: ast.Import) -> None:
        self.imports.append((node, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.imports.append((node, self.depth > 0))


def import_targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
                   modules: set[str] | dict) -> list[str]:
    """The hydranet modules one import statement of `module` names: `from hydranet.x import y` is
    `hydranet.x.y` when that is a module, else `hydranet.x`; `import hydranet.x.y` the longest existing
    module prefix. Non-hydranet imports give nothing."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        targets = [f"{prefix}.{a.name}" for a in node.names if f"{prefix}.{a.name}" in modules] or [prefix]
    out = []
    for target in targets:
        if target == "hydranet" or target.startswith("hydranet."):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            out.append(target)
    return out


def package_exports(root: Path) -> dict[str, dict[str, str]]:
    """Per package (``hydranet.eval``: its ``__init__``; ``hydranet.geometry``: the module itself) its
    ``__all__`` as ``{name: module defining it}``, read statically: a literal ``__all__`` (names defined in
    the module, or imported into it) or a ``lazy_loader.attach(__name__, submod_attrs={...})`` map."""
    modules = {module_name(p, root): p for p in sorted((root / "hydranet").rglob("*.py"))}
    out: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        if name.count(".") > 1 or name == "hydranet.__main__":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        imported: dict[str, str] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom):
                for target, alias in zip(import_targets(stmt, name, path.name == "__init__.py", modules),
                                         stmt.names, strict=False):
                    imported[alias.asname or alias.name] = target
        names: dict[str, str] | None = None
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "attach":
                for kw in node.keywords:
                    if kw.arg == "submod_attrs" and isinstance(kw.value, ast.Dict):
                        names = {e.value: f"{name}.{k.value}" for k, v in zip(kw.value.keys, kw.value.values,
                                                                             strict=True) for e in v.elts}
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                      for t in node.targets) and isinstance(node.value, ast.List):
                names = {n: imported.get(n, name) for n in ast.literal_eval(node.value)}
        if names is not None:
            out[name] = names
    return out


def import_statements(root: Path) -> list[tuple[str, int, str, list[str]]]:
    """Every ``from hydranet... import`` statement of a hydranet module that names another package:
    ``(module, line, module named, names)`` (``import hydranet.x`` gives names ``[]``)."""
    modules = {module_name(p, root): p for p in sorted((root / "hydranet").rglob("*.py"))}
    out = []
    for name, path in modules.items():
        collector = ImportCollector()
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        for node, _ in collector.imports:
            if isinstance(node, ast.Import):
                out += [(name, node.lineno, a.name, []) for a in node.names
                        if a.name.startswith("hydranet.") and package_of(a.name) != package_of(name)]
            elif node.module and node.module.startswith("hydranet") and not node.level:
                if package_of(node.module) != package_of(name):
                    out.append((name, node.lineno, node.module, [a.name for a in node.names]))
    return out


def internal_imports(root: Path) -> dict[str, list[tuple[str, bool, int]]]:
    """Per hydranet module under `root`: `[(imported hydranet module, inside a function?, line)]`; a name imported
    through a package's ``__all__`` counts as an import of the module that defines it."""
    modules = {module_name(p, root): p for p in sorted((root / "hydranet").rglob("*.py"))}
    exports = package_exports(root)
    out: dict[str, list[tuple[str, bool, int]]] = {}
    for name, path in modules.items():
        collector = ImportCollector()
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        found = []
        for node, local in collector.imports:
            targets = import_targets(node, name, path.name == "__init__.py", modules)
            if isinstance(node, ast.ImportFrom) and len(targets) == 1 and targets[0] in exports \
                    and targets[0] != name and not targets[0].startswith(name + "."):
                resolved = [exports[targets[0]].get(a.name, targets[0]) for a in node.names]
                targets = list(dict.fromkeys(resolved))
            found += [(t, local, node.lineno) for t in targets]
        out[name] = found
    return out


def collect(root: Path) -> dict[str, dict]:
    """Per module: path, line count, tree and internal imports `[(target_module, in_function)]`."""
    imports = internal_imports(root)
    info: dict[str, dict] = {}
    for path in sorted((root / "hydranet").rglob("*.py")):
        name = module_name(path, root)
        text = path.read_text()
        info[name] = {"path": path, "lines": len(text.splitlines()), "tree": ast.parse(text, filename=str(path)),
                      "imports": [(t, local) for t, local, _ in imports[name]]}
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
            if _overload(node):  # the implementation after the @overload stubs carries the docstring
                continue
            total += 1
            if ast.get_docstring(node) is None:
                missing.append(f"{m}.{node.name}")
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        continue
                    if item.name.startswith("_") or item.name == "forward" or _overload(item):
                        continue
                    total += 1
                    if ast.get_docstring(item) is None:
                        missing.append(f"{m}.{node.name}.{item.name}")
    return total, missing


def _overload(node: ast.AST) -> bool:
    return any(getattr(d, "id", getattr(d, "attr", "")) == "overload" for d in getattr(node, "decorator_list", []))


GRID_FIELDS = {"x_range", "y_range", "cell"}
RIG_BUILDERS = {"Rig", "Camera", "CameraSpec", "CameraConfig", "default_rig", "rig_of_frame", "from_dict"}


def _is_module(node: ast.ClassDef) -> bool:
    """A torch module class (its bases name ``nn.Module`` or ``Module``)."""
    return any(isinstance(b, ast.Attribute) and b.attr == "Module" or isinstance(b, ast.Name) and b.id == "Module"
               for b in node.bases)


def grid_forms(info: dict[str, dict]) -> list[str]:
    """``bev_grid_forms``' places (module docstring): ``module.Class (why)``."""
    out = []
    for m, entry in sorted(info.items()):
        for node in ast.walk(entry["tree"]):
            if not isinstance(node, ast.ClassDef):
                continue
            fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            if GRID_FIELDS <= fields:
                out.append(f"{m}.{node.name} (grid type)")
            elif node.name != "Setup" and not _is_module(node):
                keeps = "grid" in fields or any(
                    isinstance(t, ast.Attribute) and t.attr == "grid" and isinstance(t.value, ast.Name)
                    and t.value.id == "self" for sub in ast.walk(node) if isinstance(sub, ast.Assign | ast.AnnAssign)
                    for t in (sub.targets if isinstance(sub, ast.Assign) else [sub.target]))
                if keeps:
                    out.append(f"{m}.{node.name} (holds a grid)")
    return out


def rig_rebuilds(info: dict[str, dict]) -> list[str]:
    """``rig_rebuilds``' call sites (module docstring): ``module:line name``."""
    out = []
    for m, entry in sorted(info.items()):
        if m == "hydranet.setup":
            continue
        skip: set[int] = set()
        for node in ast.walk(entry["tree"]):  # a source's own `setup` reports its rig
            if isinstance(node, ast.FunctionDef) and node.name == "setup":
                skip |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(entry["tree"]):
            if isinstance(node, ast.Call) and id(node) not in skip:
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name in RIG_BUILDERS and not (name == "from_dict" and not (
                        isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "Rig")):
                    out.append(f"{m}:{node.lineno} {name}")
    return out


# The forward entry points of a network or graph, the ones of earlier layouts included (``predictor_loops``).
FORWARD_ATTRS = {"forward_step", "forward_features", "forward_from_features", "step_from_features", "forward_batch",
                 "stream", "run_step"}
MODEL_NAMES = {"model", "net", "teacher", "dm", "deployed", "shadow", "graph"}
# The model itself (its own composition, the ONNX runtime, the graphs traced for export) and the training step.
NOT_PREDICTORS = ("hydranet.model.", "hydranet.deploy.runtime", "hydranet.deploy.export", "hydranet.deploy.streaming",
                  "hydranet.train.trainer", "hydranet.train.clips", "hydranet.train.subgraph",
                  "hydranet.train.distributed")


def _calls_a_model(node: ast.Call) -> bool:
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr in FORWARD_ATTRS:
        return True
    if isinstance(f, ast.Attribute) and f.attr == "run" and isinstance(f.value, ast.Name) and f.value.id in MODEL_NAMES:
        return True
    if isinstance(f, ast.Name) and f.id in MODEL_NAMES:
        return True
    return isinstance(f, ast.Attribute) and f.attr in MODEL_NAMES and isinstance(f.value, ast.Name) \
        and f.value.id == "self"


def predictor_loops(info: dict[str, dict]) -> list[str]:
    """``predictor_loops``' modules (module docstring)."""
    return [m for m, e in sorted(info.items()) if not any(m == x or m.startswith(x) for x in NOT_PREDICTORS)
            and any(isinstance(n, ast.Call) and _calls_a_model(n) for n in ast.walk(e["tree"]))]


def registry_mechanisms(info: dict[str, dict]) -> list[str]:
    """``registry_mechanisms``' functions: ``module.function`` (module docstring)."""
    out = []
    for m, e in sorted(info.items()):
        if m == "hydranet.data.labels":
            continue
        for node in ast.walk(e["tree"]):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("register") and any(
                    isinstance(t, ast.Subscript) for sub in ast.walk(node) if isinstance(sub, ast.Assign)
                    for t in sub.targets):
                out.append(f"{m}.{node.name}")
    return out


def plugin_loaders(info: dict[str, dict]) -> list[str]:
    """``plugin_loaders``' modules (module docstring)."""
    out = []
    for m, e in sorted(info.items()):
        tree = e["tree"]
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        loads = any(isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) in (
            "entry_points", "iter_modules", "import_module") for n in ast.walk(tree))
        loads |= any(local and t.count(".") == 1 for t, local in e["imports"])
        for stmt in tree.body:
            if isinstance(stmt, ast.Import) and any(a.name.startswith("hydranet.") and a.asname is None
                                                   for a in stmt.names):
                loads = True  # ``import hydranet.x.y``: bound to ``hydranet``, for its side effects
            elif isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith("hydranet"):
                loads |= any(f"{stmt.module}.{a.name}" in info and (a.asname or a.name) not in used
                             for a in stmt.names)
        if loads:
            out.append(m)
    return out


def package_levels(graph: dict[str, set[str]]) -> int:
    """The longest chain of package imports + 1 (cycles, which the test forbids, are cut)."""
    depth: dict[str, int] = {}

    def level(p: str, stack: frozenset[str]) -> int:
        if p not in depth:
            deps = [d for d in graph.get(p, ()) if d not in stack]
            depth[p] = 1 + max((level(d, stack | {d}) for d in deps), default=0)
        return depth[p]

    return max((level(p, frozenset({p})) for p in graph), default=0)


def outside_all(root: Path) -> tuple[list[str], list[str]]:
    """(cross-package imports that name a module or a name outside the package's ``__all__``, packages
    without an ``__all__``)."""
    exports = package_exports(root)
    wrong = []
    for module, line, named, names in import_statements(root):
        pkg = package_of(named)
        if named != pkg:
            wrong.append(f"{module}:{line} imports {named} (a module of {pkg}: import from {pkg})")
        elif named != "hydranet":
            wrong += [f"{module}:{line} imports {n} from {pkg}, not in its __all__" for n in names
                      if n not in exports.get(pkg, {})]
    packages = {package_of(m) for m in (module_name(p, root) for p in (root / "hydranet").rglob("*.py"))}
    return wrong, sorted(p for p in packages if p not in exports and p != "hydranet.__main__")


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
    """The static figures for the checkout at `root` (the folder holding `hydranet/`)."""
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
    forms, rebuilds = grid_forms(info), rig_rebuilds(info)
    package_cycles = strongly_connected(package_graph)
    # file cycles through a package __init__ re-export are package-level effects; report real files.
    file_cycles = strongly_connected(file_graph)
    loops, mechanisms, loaders = predictor_loops(info), registry_mechanisms(info), plugin_loaders(info)
    not_through_all, without_all = outside_all(root)
    out = {
        "wings": len(WINGS),
        "package_levels": package_levels(package_graph),
        "predictor_loops": len(loops),
        "registry_mechanisms": len(mechanisms),
        "plugin_loaders": len(loaders),
        "cross_package_imports_outside_all": len(not_through_all),
        "packages_without_all": len(without_all),
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
        "bev_grid_forms": len(forms),
        "rig_rebuilds": len(rebuilds),
    }
    if with_lists:
        out["lists"] = {
            "predictor_loops": loops,
            "registry_mechanisms": mechanisms,
            "plugin_loaders": loaders,
            "cross_package_imports_outside_all": not_through_all,
            "packages_without_all": without_all,
            "bev_grid_forms": forms,
            "rig_rebuilds": rebuilds,
            "frame_path": path_files,
            "package_cycles": package_cycles,
            "file_cycles": file_cycles,
            "files_over_400_lines": long_files,
            "function_level_imports": sorted({f"{m} -> {t}" for m, t in in_function}),
            "public_without_docstring": missing,
        }
    return out


def _labels(n: int, h: int, w: int, grid_shape: tuple[int, int]) -> dict:
    """One object or an empty map for every built-in task's label (the traced frame's ground truth)."""
    import torch

    box2d = torch.tensor([[10.0, 10.0, 30.0, 40.0]])
    one = torch.zeros(1, dtype=torch.long)
    return {"detection2d": {"boxes": box2d, "classes": one, "camera": one, "visible": torch.ones(1), "track_id": one},
            "traffic_light": {"boxes": box2d, "camera": one, "state": one, "lane": one, "track_id": one},
            "objects3d": {"boxes": torch.tensor([[8.0, 1.0, 0.8, 4.5, 1.9, 1.6, 0.1]]), "classes": one,
                          "velocity": torch.zeros(1, 2), "track_id": one},
            "drivable": torch.zeros(n, h, w, dtype=torch.uint8), "lanes": torch.zeros(n, h, w, dtype=torch.uint8),
            "depth": torch.full((n, h, w), 10.0), "bev_semantic": torch.zeros(6, *grid_shape, dtype=torch.uint8)}


def trace_frame(tasks: list[str]) -> dict[str, list[str]]:
    """Run one frame rig -> Sample -> collate -> create_model -> forward -> loss -> export_onnx for ``tasks`` in
    THIS interpreter under ``sys.setprofile``: ``{"route": files whose functions ran, "frame": files whose
    functions ran with the frame in hand}`` (relative paths). The frame is in hand while the ``Sample`` is
    validated and collated, during the forward pass and the losses, and inside a ``forward`` that the ONNX
    export traces; building the rig and the model and writing the manifest are the route only."""
    import torch

    import hydranet
    from hydranet.data.sample import Sample, collate
    from hydranet.deploy.export import export_onnx
    from hydranet.model import ModelConfig, create_model
    from hydranet.setup import default_rig

    package = str(Path(hydranet.__file__).resolve().parent)
    ran: set[str] = set()
    with_frame: set[str] = set()
    state = {"frame": False, "forward_depth": 0, "export": False}

    def profile(frame, event, arg) -> None:  # noqa: ARG001 - sys.setprofile's signature
        code = frame.f_code
        if not code.co_filename.startswith(package) or code.co_name == "<module>":
            return
        if event == "call":
            ran.add(code.co_filename)
            if state["export"] and code.co_name == "forward":
                state["forward_depth"] += 1
            if state["frame"] or state["forward_depth"]:
                with_frame.add(code.co_filename)
        elif event == "return" and state["export"] and code.co_name == "forward":
            state["forward_depth"] -= 1

    torch.manual_seed(0)
    h, w = 64, 128
    cfg = ModelConfig.preset("tiny", setup={"image_size": (h, w), "grid": {"x_range": (-16.0, 16.0),
                                                                          "y_range": (-16.0, 16.0), "cell": 1.0}},
                             tasks={t: {} for t in tasks})
    sys.setprofile(profile)
    try:
        rig = default_rig((h, w))
        labels = {k: v for k, v in _labels(len(rig), h, w, (32, 32)).items() if k in tasks}
        sample = Sample(images=torch.randint(0, 256, (len(rig), 3, h, w), dtype=torch.uint8),
                        intrinsics=rig.intrinsics(), T_ego_from_cam=rig.extrinsics(), T_world_from_ego=torch.eye(4),
                        timestamp=0.0, scene_id="trace", camera_names=tuple(rig.names), labels=labels)
        state["frame"] = True
        sample.validate()
        batch = collate([sample])
        state["frame"] = False
        model = create_model(cfg)
        state["frame"] = True
        out = model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=list(tasks))
        sum(model.task_objects[t].loss(out[t], batch)["loss"] for t in tasks).backward()
        state["frame"], state["export"] = False, True
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(model.eval(), Path(tmp) / "trace.onnx", list(tasks))
    finally:
        sys.setprofile(None)
    rel = os.path.dirname(package)
    return {"route": sorted(os.path.relpath(f, rel) for f in ran),
            "frame": sorted(os.path.relpath(f, rel) for f in with_frame)}


def write_route_checkpoint(directory: Path) -> Path:
    """A checkpoint as the route writes it: ``run_training`` for 2 steps on the synthetic world (64x128)."""
    from rich.console import Console

    from hydranet.train.config import config_from_dict
    from hydranet.train.run import run_training

    cfg = config_from_dict({
        "data": {"datasets": {"w": {"kind": "world", "frames": 2, "world": {"num_scenes": 1, "frames_per_scene": 2}}}},
        "model": {"preset": "tiny", "trunk": {"name": "regnet_tiny"}, "neck": {"channels": 16},
                  "fusion": {"channels": 16, "encoder_blocks": 1}, "bev_channels": 16,
                  "setup": {"image_size": [64, 128], "grid": {"cell": 2.0}},
                  "tasks": {"drivable": {}, "objects3d": {}}},
        "train": {"steps": 2, "batch_size": 1, "warmup_steps": 0, "threads": 1, "log_every": 1}}, "<route>")
    summary = run_training(cfg, directory, progress=False, console=Console(file=open(os.devnull, "w")))
    return Path(summary["checkpoint"])


def trace_export(checkpoint: str) -> dict:
    """``export_checkpoint(checkpoint)`` in THIS interpreter: files whose functions ran during the export, the
    hydranet modules imported by then, and those of ``world/`` or a compat module."""
    import hydranet
    from hydranet.deploy.export import export_checkpoint

    package = str(Path(hydranet.__file__).resolve().parent)
    ran: set[str] = set()

    def profile(frame, event, arg) -> None:  # noqa: ARG001 - sys.setprofile's signature
        if event == "call" and frame.f_code.co_filename.startswith(package):
            ran.add(os.path.relpath(frame.f_code.co_filename, os.path.dirname(package)))

    sys.setprofile(profile)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            export_checkpoint(checkpoint, Path(tmp) / "route.onnx")
    finally:
        sys.setprofile(None)
    modules = sorted(m for m in sys.modules if m == "hydranet" or m.startswith("hydranet."))
    bad = [m for m in modules if m.startswith("hydranet.world") or m.split(".")[-1] in ("compat", "source_layouts")
           or m == "hydranet.data.layout"]
    return {"files_run": sorted(ran), "modules_imported": modules, "world_or_compat": bad}


def export_route(root: Path) -> dict:
    """The export route (module docstring) on the checkout at ``root``: a checkpoint from a short training run,
    then ``trace_export`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory() as tmp:
        script = str(Path(__file__).resolve())
        run = subprocess.run([sys.executable, script, "--route-checkpoint", str(Path(tmp) / "r")], cwd=root, env=env,
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"the route's training run failed:\n{run.stderr[-3000:]}")
        trace = subprocess.run([sys.executable, script, "--trace-export", run.stdout.strip().splitlines()[-1]],
                               cwd=root, env=env, capture_output=True, text=True, check=False)
        if trace.returncode != 0:
            raise RuntimeError(f"tracing the export failed:\n{trace.stderr[-3000:]}")
    return json.loads(trace.stdout)


def runtime_path(root: Path, tasks: tuple[str, ...]) -> dict[str, list[str]]:
    """``trace_frame(tasks)`` in a fresh interpreter on the checkout at ``root`` (nothing cached by an
    earlier trace); raises ``RuntimeError`` with its stderr when the trace fails."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--trace", ",".join(tasks)], cwd=root,
                            env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"tracing {tasks} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--list", action="store_true", help="add the names behind each figure")
    parser.add_argument("--static-only", action="store_true", help="skip the traced exports (runtime_path_files)")
    parser.add_argument("--trace", help=argparse.SUPPRESS)  # internal: one traced frame, prints its files
    parser.add_argument("--route-checkpoint", help=argparse.SUPPRESS)  # internal: the route's training run
    parser.add_argument("--trace-export", help=argparse.SUPPRESS)  # internal: the route's export, traced
    args = parser.parse_args()
    if args.trace:
        print(json.dumps(trace_frame(args.trace.split(","))))
        return
    if args.route_checkpoint:
        print(write_route_checkpoint(Path(args.route_checkpoint)))
        return
    if args.trace_export:
        print(json.dumps(trace_export(args.trace_export)))
        return
    out = measure(args.root, args.list)
    if not args.static_only:
        traced = {"one_task": runtime_path(args.root, ONE_TASK), "all_tasks": runtime_path(args.root, ALL_TASKS)}
        out["runtime_path_files"] = {k: len(v["route"]) for k, v in traced.items()}
        out["frame_files"] = {k: len(v["frame"]) for k, v in traced.items()}
        route = export_route(args.root)
        out["export_route"] = {"files_run": len(route["files_run"]), "modules_imported": len(route["modules_imported"]),
                               "world_or_compat": len(route["world_or_compat"])}
        if args.list:
            out["lists"]["runtime_path"] = traced
            out["lists"]["export_route"] = route
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
