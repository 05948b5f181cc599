"""The house rules of docs/architecture.md, checked on the code itself.

Every ``import`` between migperf modules counts: at the top of a module,
inside a function, and under ``TYPE_CHECKING`` (a type-only import still ties
the two modules together for a reader). A failure names the modules to fix.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "migperf"

#: Layers from the top; a module may import its own layer's package or any below.
#: Packages on the same rank (report and planner; mig and telemetry) do not import
#: each other. The top-level modules (errors, models, paths, procs, yamlsource) are
#: the base every layer may use.
LAYERS: dict[str, int] = {
    "cli": 0,
    "experiments": 1,
    "planner": 2,
    "report": 2,
    "bench": 3,
    "compat": 3,
    "sharing": 4,
    "mig": 5,
    "telemetry": 5,
    "results": 6,
    "nvml": 7,
    "(base)": 8,
}
#: The entry point ``python -m migperf`` starts the CLI, from above every layer.
ENTRY_POINTS = {"migperf.__main__"}
#: Modules allowed past the size limit: the simulated driver mirrors NVML's C API
#: one function for one function, as nvitop's libnvml.py does.
LARGE_OK = {"migperf.nvml.sim.lib"}
MAX_LINES = 650


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every migperf import."""
    path = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target and target.startswith("migperf"):
                    yield target, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                if target and target.startswith("migperf"):
                    yield target, alias.name, node.lineno


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "(base)"


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in _imports(module):
            if target == module:
                continue
            # A package re-exporting its children is not their cycle partner.
            if MODULES[target].name == "__init__.py" and module.startswith(target + "."):
                continue
            if MODULES[module].name == "__init__.py" and target.startswith(module + "."):
                continue
            edges[module].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_every_package_and_its_imports() -> None:
    # Guards the checks below against passing because they look at nothing.
    assert {_layer(m) for m in MODULES} == set(LAYERS)
    targets = {t for t, _, _ in _imports("migperf.experiments.runner")}
    assert "migperf.mig.apply" in targets and "migperf.bench.launch" in targets


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    assert _cycles(_edges()) == []


def test_imports_only_run_down_the_layers() -> None:
    upward = []
    for module in MODULES:
        if module in ENTRY_POINTS:
            continue
        here = _layer(module)
        for target, _, line in _imports(module):
            there = _layer(target)
            if there == here:
                continue
            if LAYERS[there] <= LAYERS[here]:
                upward.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {target}")
    assert upward == []


def test_no_private_name_is_imported_from_another_module() -> None:
    private = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {target}.{name}"
        for module in MODULES
        for target, name, line in _imports(module)
        if name and name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert private == []


@pytest.mark.parametrize("module", sorted(set(MODULES) - LARGE_OK))
def test_modules_have_one_job_and_stay_readable(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it by responsibility"


@pytest.mark.parametrize(
    "package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py")
)
def test_every_package_names_what_it_offers(package: str) -> None:
    tree = ast.parse(MODULES[package].read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{package} has no docstring"
    names = [
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    ]
    assert "__all__" in names, f"{package} has no __all__"
