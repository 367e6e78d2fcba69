"""Architecture rules of lejepa_core, read from the source with ``ast`` (nothing imported):

(a) no module imports ``lejepa_envs`` or ``lejepa_plugins``: the core knows interfaces and
    env metadata, never a built-in's names or rules;
(b) the import graph of lejepa_core's modules has no cycle;
(c) no module is over 400 lines (files a newcomer reads top to bottom);
and ``import lejepa_core`` / ``import lejepa_core.cli`` do not import torch (``lejepa --help``
starts fast).

Every import counts, wherever it is: module level, inside a function, under
``if TYPE_CHECKING:`` (a type-only cycle still ties two modules together), and
``importlib.import_module("...")`` with a literal name. One exception: the lazy public names
of ``lejepa_core/__init__.py``'s module-level ``__getattr__`` (``lejepa_core.load``,
``Encoder``, ...), which runs only once the package is initialised, so it cannot take part
in an import cycle; counting it would forbid re-exporting anything that imports
``from lejepa_core import ...`` (``__version__``, ``artifacts``) along the way.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "lejepa_core"
MAX_LINES = 400
FORBIDDEN = ("lejepa_envs", "lejepa_plugins")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(dotted name, line) of everything a file imports. ``from a import b`` gives ``a.b``
    (``b`` may be a submodule or an attribute: ``resolve`` finds the module)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if name == "lejepa_core":  # the lazy public names (module docstring)
        tree.body = [
            n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
        ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..data import reader
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def resolve(dotted: str) -> str | None:
    """The lejepa_core module a dotted import name lands in (longest known prefix), if any."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported lejepa_core module: first line importing it}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges = graph.setdefault(name, {})
        for dotted, line in imports_of(path):
            target = resolve(dotted)
            if target is not None and target != name:
                edges[target] = min(line, edges.get(target, line))
    return graph


GRAPH = import_graph()


def cycle_through(start: str, graph: dict[str, dict[str, int]]) -> list[str] | None:
    """An import path start -> ... -> start (depth-first), or None when there is none."""
    stack = [(start, iter(sorted(graph[start])))]
    done = {start}
    while stack:
        node, successors = stack[-1]
        nxt = next(successors, None)
        if nxt is None:
            stack.pop()
        elif nxt == start:
            return [n for n, _ in stack] + [start]
        elif nxt not in done:
            done.add(nxt)
            stack.append((nxt, iter(sorted(graph[nxt]))))
    return None


def describe_cycle(path: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [path[0]] + [
        f"{b} (line {graph[a][b]} of {MODULES[a].relative_to(ROOT)})"
        for a, b in zip(path, path[1:], strict=False)
    ]
    return " -> ".join(steps)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_core_does_not_import_envs_or_plugins(module):
    bad = [
        f"line {line}: {dotted}"
        for dotted, line in imports_of(MODULES[module])
        if dotted.split(".")[0] in FORBIDDEN
    ]
    assert not bad, f"{MODULES[module].relative_to(ROOT)} imports built-ins: " + "; ".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_cycle_through(module):
    cycle = cycle_through(module, GRAPH)
    assert cycle is None, "import cycle: " + describe_cycle(cycle, GRAPH)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_at_most_400_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)}: {lines} lines > {MAX_LINES}"


# ---------------------------------------------------------------- the checks themselves
def test_imports_are_found_everywhere_and_resolved(tmp_path, monkeypatch):
    """Function-level, TYPE_CHECKING, relative and import_module imports all count."""
    package = tmp_path / "lejepa_core"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from lejepa_core.b import Thing\n"
        "def f():\n"
        "    import lejepa_envs.arc_grid\n"
        "    from .sub import c\n"
        "    return importlib.import_module('lejepa_core.sub.d')\n"
    )
    for name in ("b.py", "sub/c.py", "sub/d.py"):
        (package / name).write_text("")
    (package / "sub" / "e.py").write_text("from ..b import x\nfrom . import c\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(
        sys.modules[__name__], "MODULES", {module_name(p): p for p in package.rglob("*.py")}
    )
    graph = import_graph()
    assert graph["lejepa_core.a"] == {
        "lejepa_core.b": 3,
        "lejepa_core.sub": 6,
        "lejepa_core.sub.c": 6,
        "lejepa_core.sub.d": 7,
    }
    assert graph["lejepa_core.sub.e"] == {
        "lejepa_core.b": 1,
        "lejepa_core.sub": 2,
        "lejepa_core.sub.c": 2,
    }
    assert ("lejepa_envs.arc_grid", 5) in imports_of(package / "a.py")


def test_cycle_search_reports_the_path():
    graph = {"a": {"b": 1}, "b": {"c": 2, "d": 3}, "c": {}, "d": {"a": 4}, "e": {"a": 5}}
    assert cycle_through("a", graph) == ["a", "b", "d", "a"]
    assert cycle_through("d", graph) == ["d", "a", "b", "d"]
    assert cycle_through("c", graph) is None and cycle_through("e", graph) is None


# ---------------------------------------------------------------- start-up cost
@pytest.mark.slow
@pytest.mark.parametrize("module", ["lejepa_core", "lejepa_core.cli"])
def test_importing_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"import {module} imports torch"
