"""The shape of hydranet's imports: wings, an __all__ per package, no cycles, private names, imports at the top.

The packages are grouped in a few wings (``WINGS`` in benchmarks/architecture.py, drawn in docs/design.md): a
package imports packages of its own wing or of the wings to its left, never one to its right, and the packages
never form a cycle, nor do the files (``if TYPE_CHECKING:`` imports included). A package imports another only
through that package's ``__all__`` (``from hydranet.data import Sample``, never ``hydranet.data.sample``); a
name only its own file uses is private (``_name``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One import walker serves this check and the figures of benchmarks/architecture.py.
_spec = importlib.util.spec_from_file_location("hydranet_architecture", ROOT / "benchmarks" / "architecture.py")
assert _spec is not None and _spec.loader is not None
_architecture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_architecture)

WINGS: dict[str, tuple[str, ...]] = _architecture.WINGS
WING = {pkg: i for i, pkgs in enumerate(WINGS.values()) for pkg in pkgs}
NAMES = list(WINGS)
IMPORTS = _architecture.internal_imports(ROOT)
# Files the lead is changing in parallel (issue 21's other half): their module-level helpers are renamed to
# _name once that change lands; until then they are the only exception to the private-name rule.
PENDING_PRIVATE = {"hydranet/model/trunk.py", "hydranet/model/fusion.py",
                   "hydranet/model/temporal.py", "hydranet/model/config.py", "hydranet/train/trainer.py",
                   "hydranet/deploy/quantize.py"} | {
    str(p.relative_to(ROOT)) for p in (ROOT / "hydranet" / "tasks").glob("*.py") if p.name != "base.py"}


def layer_of(module: str) -> str:
    """`hydranet.tasks.base` -> `tasks`; `hydranet.viz` -> `viz`; `hydranet` -> `hydranet`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def rightward(imports: dict[str, list[tuple[str, bool, int]]]) -> list[str]:
    """Every import of a package in a wing to the module's right."""
    wrong = []
    for module, found in imports.items():
        src = layer_of(module)
        for target, _, line in found:
            dst = layer_of(target)
            if WING.get(dst, -1) > WING.get(src, -1):
                wrong.append(f"{module}:{line} imports {target} (wing '{NAMES[WING[dst]]}' is right of "
                             f"'{NAMES[WING[src]]}')")
    return wrong


def test_every_package_has_a_wing():
    unplaced = sorted({layer_of(m) for m in IMPORTS} - set(WING))
    assert not unplaced, f"place these in WINGS (benchmarks/architecture.py) and docs/design.md: {unplaced}"


def test_imports_go_to_the_own_wing_or_left():
    wrong = rightward(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_root_package_imports_nothing_internal():
    assert IMPORTS["hydranet"] == []


def test_imports_sit_at_the_top():
    local = [f"{m}:{line} imports {t} inside a function" for m, found in IMPORTS.items() for t, is_local, line in found
             if is_local]
    assert not local, "move these to the top of the file:\n" + "\n".join(local)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return _architecture.strongly_connected(graph)


def test_no_import_cycle_between_files_type_checking_imports_included():
    graph = {m: {t for t, _, _ in found if t != m and not t.startswith(m + ".")} for m, found in IMPORTS.items()}
    assert not _cycles(graph)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for m, found in IMPORTS.items():
        for t, _, _ in found:
            if layer_of(t) != layer_of(m):
                graph.setdefault(layer_of(m), set()).add(layer_of(t))
    assert not _cycles(graph)


def test_every_package_has_an_all_and_others_import_through_it():
    wrong, without = _architecture.outside_all(ROOT)
    assert not without, f"packages without an __all__: {without}"
    assert not wrong, "\n".join(wrong)


def test_every_exported_name_is_defined_where_the_export_map_says():
    exports = _architecture.package_exports(ROOT)
    missing = []
    for pkg, names in exports.items():
        for name, module in names.items():
            path = ROOT / (module.replace(".", "/") + ".py")
            if not path.is_file():
                path = ROOT / module.replace(".", "/") / "__init__.py"
            tree = ast.parse(path.read_text())
            defined = {n.id for node in tree.body for n in ast.walk(node) if isinstance(n, ast.Name)
                       and isinstance(n.ctx, ast.Store)} | {
                node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))} | {
                a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names}
            if name not in defined and name != "__version__":
                missing.append(f"{pkg}.__all__ names {name}, which {module} does not define")
    assert not missing, "\n".join(missing)


def test_every_export_resolves_when_imported():
    # lazy_loader imports every export at once with EAGER_IMPORT set: a broken entry fails here, not at first use.
    code = ("import importlib\n"
            "for p in ['data', 'world', 'viz', 'metrics', 'tasks', 'model', 'eval', 'train', 'deploy', 'engine']:\n"
            "    m = importlib.import_module('hydranet.' + p)\n"
            "    [getattr(m, n) for n in m.__all__]\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"EAGER_IMPORT": "1", "PATH": "", "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]


def _used_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.alias):
            out.add(n.name.split(".")[-1])
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):  # monkeypatch targets, getattr names, docs
            out.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", n.value))
    return out


def _signature_names(tree: ast.Module) -> set[str]:
    """Names in annotations of public functions, methods and fields: a type callers see is public."""
    out: set[str] = set()

    def annotation(a: ast.AST | None) -> None:
        if a is not None:
            out.update(n.id for n in ast.walk(a) if isinstance(n, ast.Name))
            out.update(n.value.split("[")[0] for n in ast.walk(a) if isinstance(n, ast.Constant)
                       and isinstance(n.value, str))

    def function(f: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if f.name.startswith("_") and f.name != "__init__":
            return
        for a in [*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs, f.args.vararg, f.args.kwarg]:
            if a is not None:
                annotation(a.annotation)
        annotation(f.returns)

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    function(item)
                elif isinstance(item, ast.AnnAssign) and not getattr(item.target, "id", "_").startswith("_"):
                    annotation(item.annotation)
    return out


def _registered(node: ast.AST) -> bool:
    """Decorated by a registration (``@register_task``, ``@TRIGGERS.register()``, ``@app.command()``)."""
    for d in getattr(node, "decorator_list", []):
        f = d.func if isinstance(d, ast.Call) else d
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        if name.startswith("register") or name == "command":
            return True
    return False


def test_names_one_file_uses_are_private():
    files = sorted((ROOT / "hydranet").rglob("*.py"))
    others = [p for d in ("tests", "benchmarks", "tools") for p in sorted((ROOT / d).rglob("*.py"))]
    used = {p: _used_names(p) for p in [*files, *others]}
    exported = {(m, n) for names in _architecture.package_exports(ROOT).values() for n, m in names.items()}
    public = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        if rel in PENDING_PRIVATE:
            continue
        module = _architecture.module_name(path, ROOT)
        tree = ast.parse(path.read_text())
        signature = _signature_names(tree)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [] if _registered(node) else [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                names = []
            for name in names:
                if name.startswith("_") or name in signature or (module, name) in exported or name in ("app", "main"):
                    continue
                if not any(name in used[q] for q in used if q != path):
                    public.append(f"{rel}: {name}")
    assert not public, "used by this file only: make them private (_name):\n" + "\n".join(public)


def test_no_private_name_is_imported_from_another_module():
    wrong = []
    for path in sorted((ROOT / "hydranet").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hydranet"):
                wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not wrong, "a name another module needs is not private:\n" + "\n".join(wrong)


def test_the_checks_catch_what_they_are_for():
    fake = {"hydranet.tasks.base": [("hydranet.eval.loop", False, 7), ("hydranet.metrics.base", False, 3)],
            "hydranet.data.sample": [("hydranet.setup", False, 2)]}
    assert rightward(fake) == ["hydranet.tasks.base:7 imports hydranet.eval.loop (wing 'loops' is right of "
                               "'network')"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
