"""The layers stay visible: the import graph is exactly the declared one, points downstream, has no
cycle, and only the CLI prints or exits.

`EDGES` lists the package-level imports that exist, no more: an edge that appears fails
(declare it here, with the reason in review), and so does a declared edge that disappears
(remove it). Imports under `if TYPE_CHECKING:` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "flashspark"

# Modules every layer may use: no FlashSpark imports of their own beyond each other.
COMMON = {"_version", "errors", "files", "redact", "secrets", "bootlog", "pins", "percentiles"}
# Downstream first: a layer imports only layers listed before it.
ORDER = [
    "recipe",
    "render",
    "plan",
    "engine",
    "provenance",
    "client",
    "cluster",
    "gates",
    "bench",
    "traffic",
    "watch",
    "tune",
    "report",
    "cli",
]
EDGES: dict[str, set[str]] = {
    "recipe": set(),
    "render": {"recipe"},
    "plan": {"recipe"},
    "engine": {"recipe"},
    "provenance": {"recipe"},
    "client": set(),
    "cluster": {"recipe", "render", "engine", "provenance", "client"},
    "gates": {"recipe", "client"},
    # recipe: a declared workload's traffic and arrival schedule; plan: the SLO ladders it measures
    "bench": {"recipe", "plan", "client", "gates"},
    "traffic": {"recipe", "client", "gates"},  # recipe: is_loopback for the proxy's listener
    # cluster: the supervisor's watcher and each node's engine state; recipe: [watch] settings
    "watch": {"recipe", "client", "gates", "cluster"},
    # plan: the screen sizes each candidate; cluster: each candidate boots through the lifecycle
    "tune": {"recipe", "plan", "cluster", "bench"},
    "report": {"gates", "bench", "traffic", "watch", "tune"},
    "cli": set(ORDER) - {"cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py") if "scripts" not in p.parts}


def runtime_imports(tree: ast.AST, known: set[str]) -> set[str]:
    """FlashSpark modules imported at run time (anywhere, functions included; TYPE_CHECKING blocks skipped)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("flashspark"):
                submodules = {f"{child.module}.{a.name}" for a in child.names} & known
                found.update(submodules)
                if len(submodules) < len(child.names):  # `from pkg import submodule` needs only the submodule
                    found.add(child.module)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("flashspark"))
            visit(child)

    visit(tree)
    return found


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def graph() -> dict[str, set[str]]:
    known = set(MODULES)
    return {m: runtime_imports(ast.parse(p.read_text()), known) & known for m, p in MODULES.items()}


def layer_edges(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for source, targets in modules.items():
        for target in targets:
            a, b = layer(source), layer(target)
            if a != b and a in EDGES and b not in COMMON:
                edges.setdefault(a, set()).add(b)
    return edges


def find_cycle(modules: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between files, as a path, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(modules.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(modules):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_layer_edges_are_exactly_the_declared_ones() -> None:
    actual = layer_edges(graph())
    declared = {k: v for k, v in EDGES.items() if v}
    assert actual == declared


def test_every_declared_edge_points_downstream() -> None:
    assert set(EDGES) == set(ORDER)
    for source, targets in EDGES.items():
        upstream = {t for t in targets if ORDER.index(t) >= ORDER.index(source)}
        assert not upstream, f"{source} imports {sorted(upstream)}, which come after it"


def test_common_modules_import_only_each_other() -> None:
    for module, targets in graph().items():
        if layer(module) in COMMON:
            assert {layer(t) for t in targets} <= COMMON, module


def test_no_import_cycle_between_files() -> None:
    assert find_cycle(graph()) is None


@pytest.mark.parametrize(
    "path", [p for p in MODULES.values() if layer(module_name(p)) != "cli"], ids=lambda p: str(p.relative_to(SRC))
)
def test_nothing_below_the_cli_prints_exits_or_uses_rich(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            owner = getattr(getattr(func, "value", None), "id", "")
            assert name != "print", f"print() at line {node.lineno}"
            assert not (owner == "sys" and name == "exit"), f"sys.exit at line {node.lineno}"
            assert not (owner == "os" and name == "_exit"), f"os._exit at line {node.lineno}"
        if isinstance(node, ast.Name) and node.id in {"SystemExit", "exit", "quit"}:
            raise AssertionError(f"{node.id} at line {node.lineno}")
        if isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any(n.split(".")[0] in {"rich", "click"} for n in names), f"UI import at {node.lineno}"


def test_the_checks_see_a_violation() -> None:
    modules = {
        "flashspark.recipe.model": {"flashspark.cli.main"},
        "flashspark.cli.main": {"flashspark.recipe.model"},
        "flashspark.gates.a": {"flashspark.gates.b"},
        "flashspark.gates.b": {"flashspark.gates.a"},
    }
    assert layer_edges(modules)["recipe"] == {"cli"}
    assert find_cycle(modules) == ["flashspark.cli.main", "flashspark.recipe.model", "flashspark.cli.main"]
    assert find_cycle({"flashspark.gates.a": {"flashspark.gates.b"}, "flashspark.gates.b": set()}) is None
    tree = ast.parse("if TYPE_CHECKING:\n    from flashspark.cli.main import main\nfrom flashspark.errors import X\n")
    assert runtime_imports(tree, {"flashspark.cli.main", "flashspark.errors"}) == {"flashspark.errors"}
