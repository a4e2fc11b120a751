"""No import cycles between the service's modules, counting every import: top-level, in a
function and under ``TYPE_CHECKING`` alike (a cycle that only type checkers see still ties
two modules together). A package's ``__init__`` re-exporting its own modules is not a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (``from a import b`` names ``a.b`` when that is a
    module, else ``a``)."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found = submodules & modules.keys()
            named.update(found or ({node.module} & modules.keys()))
    return named


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            edge = next(edges, None)
            if edge is not None:
                if edge not in index:
                    index[edge] = low[edge] = len(index)
                    stack.append(edge)
                    on_stack.add(edge)
                    work.append((edge, iter(sorted(graph[edge]))))
                elif edge in on_stack:
                    low[node] = min(low[node], index[edge])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_of_the_service_imports_itself_back() -> None:
    modules = _modules()
    graph = {
        name: {
            target
            for target in _imports(path, modules)
            # a package's __init__ and its own modules: the package imports them, not a cycle
            if target != name
            and not target.startswith(name + ".")
            and not name.startswith(target + ".")
        }
        for name, path in modules.items()
    }
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]):
    assert _cycles(graph) == expected


#: The rooms of shared/ from the lowest to the highest (docs/design.md, "The rooms"): a module
#: may import its own room and the rooms below it, never one above.
LEVELS = (
    ("shared.verdicts",),
    ("shared.errors", "shared.keys"),
    ("shared.settings", "shared.telemetry"),
    ("shared.dataverse",),
    ("shared.events",),
    ("shared.stores",),
    ("shared.trail",),
    ("shared.pipeline",),
    ("shared.bootstrap", "shared.bus", "shared.web"),
    ("shared.cli",),
    ("shared", "functions"),
)
#: The one upward import kept on purpose: settings checks DATAVERSE_URL with the client's rule.
ALLOWED_UP = {("shared.settings", "shared.dataverse.webapi")}


def _room(module: str) -> tuple[str, int]:
    for level, rooms in enumerate(LEVELS):
        for room in rooms:
            if module == room or (room != "shared" and module.startswith(room + ".")):
                return room, level
    if module.split(".")[0] == "functions":
        return "functions", len(LEVELS) - 1
    if module in {"shared", "shared.__main__"}:
        return "shared", len(LEVELS) - 1
    raise AssertionError(f"{module} is in no room of docs/design.md: add it to LEVELS")


def test_imports_point_down_the_rooms() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        room, level = _room(name)
        for target in _imports(path, modules):
            target_room, target_level = _room(target)
            if target_room != room and target_level >= level and (name, target) not in ALLOWED_UP:
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_an_upward_import_is_found() -> None:
    assert _room("shared.events.entry")[1] < _room("shared.stores.table")[1]
    assert _room("shared.cli.read")[1] > _room("shared.web.page")[1]
