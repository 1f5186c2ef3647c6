"""The layout's rules, checked statically on every module of the project: no import cycles
(imports inside functions count), `models/` never imports `jobs/`, and imports between the
layers of `jobs/` point one way (entry points -> evaluation -> training -> stages ->
platform -> models)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# a layer may import its own and any later layer of this list, never an earlier one
LAYERS = ["jobs.entrypoints", "jobs.evaluation", "jobs.training", "jobs.stages",
          "jobs.sample", "jobs.platform", "jobs", "models"]


def project_modules() -> dict[str, Path]:
    mods = {}
    for top in ("jobs", "models", "dags"):
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def imports_of(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules `path` imports anywhere in the file (resolved to the longest known
    module name: `from jobs.stages import generate` -> jobs.stages and jobs.stages.generate)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for c in candidates:
            while c and c not in mods:
                c = c.rpartition(".")[0]
            if c and c != name:
                found.add(c)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {m: imports_of(m, p, mods) for m, p in mods.items()}


def test_no_import_cycles(graph):
    # Tarjan's strongly connected components; any component of 2+ modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_models_import_nothing_from_jobs(graph):
    bad = {m: sorted(d for d in deps if d.startswith("jobs")) for m, deps in graph.items()
           if m.startswith("models")}
    assert {m: d for m, d in bad.items() if d} == {}


def layer_of(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def test_imports_point_down_the_layers(graph):
    upward = []
    for module, deps in graph.items():
        mine = layer_of(module)
        if mine is None:  # dags/: wiring only, may import any entry point
            continue
        for dep in deps:
            theirs = layer_of(dep)
            if theirs is not None and theirs < mine:
                upward.append((module, dep))
    assert sorted(upward) == []


def test_dag_files_import_only_entry_points(graph):
    for module, deps in graph.items():
        if module.startswith("dags"):
            assert all(d.startswith("jobs.entrypoints") for d in deps), (module, deps)


def test_the_checker_sees_a_cycle_and_a_function_level_import(tmp_path):
    mods = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    mods["pkg.a"].write_text("from pkg.b import x\n")
    mods["pkg.b"].write_text("def f():\n    from pkg import a\n")
    mods["pkg"] = tmp_path / "__init__.py"
    mods["pkg"].write_text("")
    assert imports_of("pkg.a", mods["pkg.a"], mods) == {"pkg.b"}
    assert imports_of("pkg.b", mods["pkg.b"], mods) == {"pkg", "pkg.a"}
