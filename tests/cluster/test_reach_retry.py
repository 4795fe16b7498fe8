"""Preflight's first contact with a node: one stalled handshake is retried, a node that stalls twice is
named unreachable. The stall is scripted (a transport whose answers are given): a real sshd will not
stall on demand, and the real nodes' preflight is test_preflight.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flashspark.cluster.preflight import check_node
from flashspark.cluster.transport import CommandResult
from flashspark.recipe import resolve_recipe


class ScriptedTransport:
    """Answers `hostname` from a script (True: it stalls past its budget); everything else succeeds."""

    name = "spark2"

    def __init__(self, stalls: list[bool]) -> None:
        self.stalls = stalls
        self.calls: list[list[str]] = []

    async def run(self, argv: list[str], *, stdin: bytes | None = None, timeout_s: float = 60.0) -> CommandResult:
        self.calls.append(argv)
        if argv == ["hostname"] and self.stalls.pop(0):
            return CommandResult(argv, -9, "", f"timed out after {timeout_s:g} s", timeout_s, timed_out=True)
        return CommandResult(argv, 0, "spark2\n", "", 0.01)

    async def write_file(self, path: str, content: str, *, mode: int = 0o600) -> None:
        raise AssertionError("preflight writes nothing")

    def local_argv(self, argv: list[str]) -> list[str]:
        return argv


def reachable(tmp_path: Path, stalls: list[bool]) -> tuple[bool, str, int]:
    path = tmp_path / "pair.toml"
    path.write_text('profile = "local-cpu"\n[[nodes]]\nname = "spark2"\nssh = "root@10.9.0.12"\n')
    recipe = resolve_recipe(config=path).recipe
    transport = ScriptedTransport(stalls)
    checks = asyncio.run(check_node(recipe, 0, transport))  # type: ignore[arg-type]
    reach = next(c for c in checks if c.check == "reachable")
    return reach.ok, reach.detail, transport.calls.count(["hostname"])


def test_one_stalled_handshake_is_retried(tmp_path: Path) -> None:
    assert reachable(tmp_path, [True, False]) == (True, "spark2", 2)


def test_a_node_that_stalls_twice_is_named_unreachable(tmp_path: Path) -> None:
    ok, detail, tries = reachable(tmp_path, [True, True])
    assert (ok, tries) == (False, 2) and "timed out after 30 s" in detail


def test_a_prompt_answer_is_asked_once(tmp_path: Path) -> None:
    assert reachable(tmp_path, [False]) == (True, "spark2", 1)
