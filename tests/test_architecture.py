"""The package's shape: no import cycles, no reaching into another module's private names, layers respected.

The graph counts every import, including those inside functions: a lazy import still ties
two modules together, and a cycle through one is how ``flow -> fit_steps -> flow`` crept in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
# Each subpackage may import only from itself and the packages before it in this list.
LAYERS = ("core", "record", "data", "models", "cost", "predict", "runtimes", "measure", "export", "train", "engine",
          "analysis", "package", "fit", "research", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, mods: dict[str, Path]) -> list[tuple[str, tuple[str, ...], int]]:
    """(imported pipeline module, names taken from it, line) for every import in ``path``, lazy ones included."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, (), node.lineno) for a in node.names if a.name.split(".")[0] == "pipeline"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "pipeline":
                continue
            for alias in node.names:  # `from pipeline.x import y` may name a submodule y
                sub = f"{base}.{alias.name}"
                if sub in mods:
                    found.append((sub, (), node.lineno))
                else:
                    found.append((base, (alias.name,), node.lineno))
    return [(m, names, line) for m, names, line in found if m in mods and m != me]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {dep for dep, _, _ in imports(p, mods)} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_modules_private_name():
    mods = modules()
    offenders = [f"{module_name(p)}:{line} takes {name} from {dep}" for p in mods.values()
                 for dep, names, line in imports(p, mods) for name in names
                 if name.startswith("_") and not name.startswith("__")]
    assert offenders == []


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_imports_only_from_the_layers_below_it(package):
    mods = modules()
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for m, p in mods.items():
        if layer(m) != package:
            continue
        for dep, _, line in imports(p, mods):
            target = layer(dep)
            if target is not None and rank[target] > rank[package]:
                upward.append(f"{m}:{line} imports {dep}")
    assert upward == []


def test_every_module_belongs_to_a_layer():
    loose = [m for m in modules() if m != "pipeline" and layer(m) is None]
    assert loose == [], "put new modules in one of the layers (docs/architecture.md)"
