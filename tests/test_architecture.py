"""The import layers of hydranet: every module's imports (function-level ones included) go left.

A frame flows left to right through the layers below; a module may import its own package and any
layer to its LEFT, never one to its right nor a sibling in its own tier. The same order is drawn in
docs/design.md. A new package must be placed here before it can import or be imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One import walker serves this check and the figures of benchmarks/architecture.py.
_spec = importlib.util.spec_from_file_location("hydranet_architecture", ROOT / "benchmarks" / "architecture.py")
assert _spec is not None and _spec.loader is not None
_architecture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_architecture)

# Left to right. Packages in one tier are independent of each other.
LAYERS: list[tuple[str, ...]] = [
    ("hydranet",),  # the root package: __version__ only
    ("limits", "outputs"),  # the limits inputs are held to; outputs that never eat inputs, locks, atomic files
    ("geometry", "config_errors", "yaml_files", "json_files", "console"),  # frames, BEV grid; errors; YAML, JSON
    ("setup",),  # the Setup: rigs, image size, BEV grid, class vocabularies; the one data-vs-model check
    ("data",),  # the Sample contract, label specs, shards, source readers, loaders
    ("world",),  # the synthetic world: a producer of Sample (registers the `world` source)
    ("datasets",),  # open any source of frames by name or config (--data)
    ("viz", "metrics"),  # drawing; streaming metrics (leaf libraries)
    ("tasks",),  # the Task contract and registry: heads, losses, decoders
    ("model",),  # trunk, neck, fusion, temporal, HydraNet
    ("checkpoint",),  # checkpoint I/O, load_model
    ("eval",),  # the evaluation loop, suites, gate, reports
    ("train", "deploy"),  # training; export and deployed runtime
    ("engine", "predict"),  # the data engine; batch prediction to JSON
    ("cli",),  # the command line
    ("__main__",),  # python -m hydranet
]
# Function-level internal imports that must stay local: each only *loads plug-ins* of a registry
# (runs the @register_* decorators of a package's files), and the package imports the registry's
# module, so the import cannot sit at the top.
PLUGIN_LOADS = {
    # create_task imports the package to run every task file's @register_task.
    ("hydranet.tasks.base", "hydranet.tasks"),
    # create_trigger imports the package to run every trigger file's @register_trigger.
    ("hydranet.engine.triggers.base", "hydranet.engine.triggers"),
}


def layer_of(module: str) -> str:
    """`hydranet.tasks.base` -> `tasks`; `hydranet.viz` -> `viz`; `hydranet` -> `hydranet`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


IMPORTS = _architecture.internal_imports(ROOT)
TIER = {pkg: i for i, tier in enumerate(LAYERS) for pkg in tier}


def test_every_package_has_a_layer():
    unplaced = sorted({layer_of(m) for m in IMPORTS} - set(TIER))
    assert not unplaced, f"place these in LAYERS (tests/test_architecture.py) and docs/design.md: {unplaced}"


def rightward(imports: dict[str, list[tuple[str, bool, int]]]) -> list[str]:
    """Every import of a layer to the module's right or of a sibling in its tier."""
    wrong = []
    for module, found in imports.items():
        src = layer_of(module)
        for target, is_local, line in found:
            dst = layer_of(target)
            if dst == src or dst == "hydranet" or (is_local and (module, target) in PLUGIN_LOADS):
                continue
            if TIER.get(dst, -1) >= TIER.get(src, -1):
                side = "a sibling in its tier" if TIER.get(dst) == TIER.get(src) else "a layer to its right"
                wrong.append(f"{module}:{line} imports {target} ({side})")
    return wrong


def test_imports_go_left_only():
    wrong = rightward(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_root_package_imports_nothing_internal():
    assert IMPORTS["hydranet"] == []


def test_imports_sit_at_the_top():
    local = [f"{m}:{line} imports {t} inside a function" for m, found in IMPORTS.items() for t, is_local, line in found
             if is_local and (m, t) not in PLUGIN_LOADS]
    assert not local, "move these to the top of the file:\n" + "\n".join(local)


def test_no_import_cycle_between_files():
    graph = {m: {t for t, _, _ in found if t != m and not t.startswith(m + ".")} for m, found in IMPORTS.items()}
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_plugin_loads_stay_inside_their_package():
    # A plug-in load is allowed only within one package: a registry reaching to its right (as the label
    # registry in data/ once loaded hydranet.tasks) is a package cycle, whatever the reason.
    assert all(layer_of(m) == layer_of(t) for m, t in PLUGIN_LOADS)
    fake = {"hydranet.data.labels": [("hydranet.tasks", True, 70)]}
    assert rightward(fake) == ["hydranet.data.labels:70 imports hydranet.tasks (a layer to its right)"]


def test_the_check_catches_rightward_and_sibling_imports():
    fake = {
        "hydranet.tasks.base": [("hydranet.model.hydranet", True, 7), ("hydranet.metrics.base", False, 3)],
        "hydranet.train.trainer": [("hydranet.deploy.export", False, 9), ("hydranet.train.config", False, 2)],
    }
    assert rightward(fake) == ["hydranet.tasks.base:7 imports hydranet.model.hydranet (a layer to its right)",
                               "hydranet.train.trainer:9 imports hydranet.deploy.export (a sibling in its tier)"]
