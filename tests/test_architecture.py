"""The layers stay visible: imports point downstream only, and only the CLI prints or exits."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "flashspark"

# What each layer may import from FlashSpark (besides itself, errors and _version).
ALLOWED: dict[str, set[str]] = {
    "recipe": set(),
    "plan": {"recipe"},
    "render": {"recipe"},
    "engine": {"recipe", "render"},
    "client": set(),
    "cluster": {"recipe", "render", "engine", "client", "provenance"},
    "gates": {"recipe", "render", "client"},
    "bench": {"recipe", "render", "client", "gates"},
    "report": {"recipe", "render", "client", "gates", "bench", "plan"},
    "provenance": {"recipe"},
    "cli": {"recipe", "plan", "render", "engine", "cluster", "client", "gates", "bench", "report", "provenance"},
}
COMMON = {"errors", "_version", "bootlog", "redact"}


def modules() -> list[Path]:
    return [p for p in SRC.rglob("*.py") if "scripts" not in p.parts]


def layer_of(path: Path) -> str:
    relative = path.relative_to(SRC).parts
    return relative[0] if len(relative) > 1 else relative[0].removesuffix(".py")


def flashspark_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flashspark."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("flashspark.")}
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_downstream(path: Path) -> None:
    layer = layer_of(path)
    if layer in COMMON or layer == "__init__":
        return
    imported = flashspark_imports(ast.parse(path.read_text()))
    illegal = imported - ALLOWED[layer] - COMMON - {layer}
    assert not illegal, f"{layer} must not import {sorted(illegal)}"


@pytest.mark.parametrize("path", [p for p in modules() if layer_of(p) != "cli"], ids=lambda p: str(p.relative_to(SRC)))
def test_nothing_below_the_cli_prints_exits_or_uses_rich(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            owner = getattr(getattr(func, "value", None), "id", "")
            assert name != "print", f"print() at line {node.lineno}"
            assert not (owner == "sys" and name == "exit"), f"sys.exit at line {node.lineno}"
        if isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any(n.split(".")[0] in {"rich", "click"} for n in names), f"UI import at {node.lineno}"


def test_the_architecture_test_sees_a_violation(tmp_path: Path) -> None:
    bad = ast.parse("from flashspark.cli.main import main\nprint('x')\n")
    assert flashspark_imports(bad) == {"cli"}
