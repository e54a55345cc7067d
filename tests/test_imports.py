"""farm's import rules, read from the source with ast (nothing is imported): no cycle among farm's
modules, farm.render never reaches Ray, farm.driver and farm.cutting never import each other.

Every import counts, at module level or inside a function (a deferred import is still a
dependency), with relative ones resolved. ``from P import name`` is an import of ``P.name`` when
that is a module of the package, else of ``P``. scripts/check's lint-imports checks the same
rules (and the layers) from pyproject.toml; these need nothing but the standard library.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path
from typing import Iterable, Optional

import pytest

FARM = Path(__file__).resolve().parent.parent / "farm"


def module_name(root: Path, path: Path) -> str:
    """``root/render/models.py`` -> ``farm.render.models``; a package's ``__init__.py`` is the package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name a module imports, anywhere in it; ``from P import a`` gives P and P.a."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1 more
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                if len(base) < 1 or node.level - 1 > len(package):
                    raise ValueError(f"{module}: relative import beyond the top package (level {node.level})")
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """For each module of the package in ``root``: the package's modules it imports, and the
    top-level names of the other packages it imports (``ray``, ``torch``)."""
    files = {module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, path in files.items():
        names = imported_names(ast.parse(path.read_text(encoding="utf-8"), str(path)), module,
                               path.name == "__init__.py")
        internal[module] = {name for name in names if name in files and name != module}
        # ``from farm.spec import X``: the name farm.spec.X is not a module; farm.spec (also named) is.
        external[module] = {name.split(".")[0] for name in names if name.split(".")[0] != root.name}
    return internal, external


def cycle_groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other (directly or round a loop), each in name
    order, the groups in the order of their first module: Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(graph[start])))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(groups)


def a_cycle(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest loop from the group's first module back to it: ``[a, b, c, a]``."""
    first = group[0]
    inner = {module: graph[module] & set(group) for module in group}
    return path_between(first, lambda module: first in inner[module], inner) + [first]


def describe_cycles(graph: dict[str, set[str]]) -> str:
    return "\n".join(f"{', '.join(group)} (e.g. {' -> '.join(a_cycle(group, graph))})"
                     for group in cycle_groups(graph))


def path_between(start: str, is_end, graph: dict[str, set[str]]) -> Optional[list[str]]:
    """The shortest import chain from ``start`` to a module for which ``is_end`` holds (start included)."""
    came_from: dict[str, Optional[str]] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if is_end(node):
            chain = [node]
            while came_from[chain[-1]] is not None:
                chain.append(came_from[chain[-1]])
            return chain[::-1]
        for child in sorted(graph.get(node, ())):
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    return None


def chains(sources: Iterable[str], is_end, graph: dict[str, set[str]]) -> list[str]:
    """Each source module's shortest chain to a module ``is_end`` accepts, as ``a -> b -> c``."""
    found = (path_between(source, is_end, graph) for source in sorted(sources))
    return [" -> ".join(chain) for chain in found if chain]


def inside(package: str):
    return lambda module: module == package or module.startswith(package + ".")


# --- the walker on packages written here ----------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/a.py": "from . import b\nimport ray\n",                       # relative, names a module
    "pkg/b.py": "def later():\n    from pkg.sub.c import thing\n",      # inside a function
    "pkg/sub/__init__.py": "from .c import thing\n",                    # a package's own module
    "pkg/sub/c.py": "from ..d import value\nimport os.path\nfrom pkg import e\n",
    "pkg/d.py": "from pkg.sub import c as unused_but_counted\n",
    "pkg/e.py": "import numpy as np\nfrom pkg.a import *\n",
}


def test_the_walker_resolves_every_kind_of_import(tmp_path):
    internal, external = import_graph(write_package(tmp_path, PACKAGE) / "pkg")
    assert internal == {
        "pkg": set(),
        "pkg.a": {"pkg", "pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg", "pkg.d", "pkg.e"},
        "pkg.d": {"pkg.sub", "pkg.sub.c"},
        "pkg.e": {"pkg.a"},
    }
    assert external["pkg.a"] == {"ray"} and external["pkg.sub.c"] == {"os"} and external["pkg.e"] == {"numpy"}


def test_the_walker_finds_the_cycles_and_their_modules(tmp_path):
    internal, external = import_graph(write_package(tmp_path, PACKAGE) / "pkg")
    # a -> b -> sub.c -> e -> a (through a function-level and a relative import); sub.c -> d -> sub.
    assert cycle_groups(internal) == [["pkg.a", "pkg.b", "pkg.d", "pkg.e", "pkg.sub", "pkg.sub.c"]]
    assert a_cycle(cycle_groups(internal)[0], internal) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.e", "pkg.a"]
    # Two loops that share no module are two groups.
    assert cycle_groups({"x": {"y"}, "y": {"x"}, "z": {"w", "x"}, "w": {"z"}}) == [["w", "z"], ["x", "y"]]
    assert describe_cycles(internal) == ("pkg.a, pkg.b, pkg.d, pkg.e, pkg.sub, pkg.sub.c "
                                         "(e.g. pkg.a -> pkg.b -> pkg.sub.c -> pkg.e -> pkg.a)")
    # b reaches ray through the loop: the chain names every module on the way.
    assert chains(["pkg.b", "pkg.sub"], lambda m: "ray" in external[m], internal) == [
        "pkg.b -> pkg.sub.c -> pkg.e -> pkg.a", "pkg.sub -> pkg.sub.c -> pkg.e -> pkg.a"]


def test_the_walker_passes_a_package_without_cycles(tmp_path):
    clean = dict(PACKAGE, **{"pkg/e.py": "import numpy as np\n", "pkg/d.py": "VALUE = 1\n"})
    internal, external = import_graph(write_package(tmp_path, clean) / "pkg")
    assert cycle_groups(internal) == [] and describe_cycles(internal) == ""
    assert chains(["pkg.b", "pkg.d"], lambda m: "ray" in external[m], internal) == []


def test_the_walker_refuses_a_relative_import_above_the_package(tmp_path):
    root = write_package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from ... import x\n"}) / "pkg"
    with pytest.raises(ValueError, match="relative import beyond the top package"):
        import_graph(root)


# --- farm ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def farm_graph():
    return import_graph(FARM)


def test_farm_is_read_whole(farm_graph):
    internal, external = farm_graph
    assert {"farm.cli", "farm.spec", "farm.render.bigsleep"} <= set(internal)
    assert "farm.errors" in internal["farm.spec"] and "farm.spec" in internal["farm.cli"]
    assert "torch" in external["farm.render.bigsleep"]


def test_farm_has_no_import_cycle(farm_graph):
    internal, _ = farm_graph
    assert not cycle_groups(internal), "modules of farm that import each other:\n" + describe_cycles(internal)


def test_render_never_reaches_ray(farm_graph):
    """Not in farm.render's own imports, nor in any farm module they lead to."""
    internal, external = farm_graph
    found = chains(filter(inside("farm.render"), internal), lambda m: "ray" in external[m], internal)
    assert not found, "farm.render reaches ray:\n" + "\n".join(found)


def test_driver_never_imports_cutting(farm_graph):
    internal, _ = farm_graph
    found = chains(filter(inside("farm.driver"), internal), inside("farm.cutting"), internal)
    assert not found, "farm.driver imports farm.cutting:\n" + "\n".join(found)


def test_cutting_never_imports_driver(farm_graph):
    internal, _ = farm_graph
    found = chains(filter(inside("farm.cutting"), internal), inside("farm.driver"), internal)
    assert not found, "farm.cutting imports farm.driver:\n" + "\n".join(found)
