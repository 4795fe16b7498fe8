"""Benchmark prompt sets by category, each request salted so the prefix cache cannot flatter it.

Categories differ in how much speculative decoding can help (the accepted
length depends on how predictable the text is), so results are reported per
category: `code` (code completion), `agent` (an agent turn), `spec_copy`
(text the answer repeats: drafting's best case) and `prose` (free writing:
its worst case).
"""

from __future__ import annotations

from typing import Any

from flashspark.bench.options import CATEGORIES
from flashspark.errors import InputError
from flashspark.gates.prompts import agent_prompt

_CODE = (
    "Complete this Python class. Implement every method with a docstring and type hints, no commentary:\n\n"
    "class InventoryService:\n"
    '    """CRUD operations over an in-memory inventory of items with id, name, quantity and price."""\n\n'
    "    def __init__(self) -> None:\n"
)
_COPY_LINES = "\n".join(f"{i}. The quick brown fox jumps over the lazy dog, line {i}." for i in range(1, 31))
_PROSE = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def salt_line(run: str, index: int) -> str:
    # First in the prompt, so no two requests share even their first block.
    return f"[request {run}-{index}]"


def bench_messages(category: str, *, run: str, index: int) -> list[dict[str, Any]]:
    salt = salt_line(run, index)
    if category == "code":
        return [
            {"role": "system", "content": f"{salt} You are an expert Python programmer."},
            {"role": "user", "content": _CODE},
        ]
    if category == "agent":
        messages = agent_prompt("tool_turn", run=run, index=index).messages
        return [{"role": "system", "content": f"{salt} {messages[0]['content']}"}, *messages[1:]]
    if category == "spec_copy":
        return [
            {"role": "system", "content": f"{salt} You copy text exactly."},
            {"role": "user", "content": f"Copy the following lines exactly:\n{_COPY_LINES}"},
        ]
    if category == "prose":
        return [
            {"role": "system", "content": f"{salt} You are a creative writer."},
            {"role": "user", "content": _PROSE},
        ]
    raise InputError(
        f"unknown prompt category {category!r}", key="--categories", value=category, fix=f"use {', '.join(CATEGORIES)}"
    )
