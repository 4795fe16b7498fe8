"""Prompts shaped like agent traffic, in English, for the garble gate.

A tool-calling turn, a code task, a JSON task, a long-context task whose
context carries a per-request unique salt (so no two requests share a prefix
and the prefix cache cannot hide a cold-prefill bug), and plain chat.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from typing import Any

from flashspark.errors import InputError

PROMPT_KINDS = ("tool_turn", "code", "json", "long_context", "chat")
# As many salt words as the recipe's sanity bench had synthetic tokens: enough to
# span several KV blocks. Common words keep it near one token per word, so a
# CPU engine prefills it in seconds, unlike the recipe's `token<i>_<j>` form.
SALT_WORDS = 420
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "paper",
    "window",
    "garden",
    "silver",
    "market",
    "engine",
    "bridge",
    "candle",
    "orange",
    "forest",
    "pencil",
    "rocket",
    "castle",
    "dragon",
    "harbor",
    "island",
    "jacket",
    "kettle",
    "ladder",
    "magnet",
    "needle",
    "ocean",
    "pillow",
    "quartz",
    "saddle",
    "tunnel",
    "umbrella",
    "valley",
    "wagon",
    "yellow",
    "zebra",
    "anchor",
    "basket",
    "cotton",
    "desert",
    "feather",
    "glacier",
    "hammer",
    "iron",
    "jungle",
    "kitten",
    "lemon",
    "marble",
    "nickel",
    "olive",
    "parrot",
    "quiver",
    "ribbon",
    "shadow",
    "thunder",
    "velvet",
    "walnut",
    "almond",
    "beacon",
    "canyon",
    "dolphin",
    "ember",
    "falcon",
    "granite",
    "hollow",
    "ivory",
    "jasmine",
]

_TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file from the workspace.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "name": "run_tests",
        "description": "Run the project's test suite and return the summary.",
        "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}},
    },
]


@dataclass(frozen=True)
class AgentPrompt:
    kind: str
    messages: list[dict[str, Any]]


def salt(run: str, index: int, count: int = SALT_WORDS) -> str:
    """Context unique to one request from its first word on: words drawn with a per-request seed."""
    rng = random.Random(zlib.crc32(f"{run}:{index}".encode()))
    return f"[{run}-{index}] " + " ".join(rng.choice(WORDS) for _ in range(count))


def agent_prompt(kind: str, *, run: str, index: int) -> AgentPrompt:
    """The prompt of one kind for request `index` of a run (the run id keeps salts unique)."""
    english = "Answer in plain English."
    if kind == "tool_turn":
        system = (
            "You are a coding agent. You can call these tools by answering with a short plan that "
            f"names the tool to use:\n{json.dumps(_TOOLS)}\n{english}"
        )
        user = "The tests in tests/test_parser.py fail after my last change. What do you do first, and why?"
    elif kind == "code":
        system = f"You are a careful Python programmer. {english}"
        user = "Write a Python function is_palindrome(s) that ignores case and spaces, with a short docstring."
    elif kind == "json":
        system = f"You answer with valid JSON only. {english}"
        user = 'Give a JSON object with keys "name", "language" and "year" describing the Python language.'
    elif kind == "long_context":
        system = f"You summarise documents for an engineer. {english}"
        # The question does not invite listing the salt back: small models loop on that.
        user = (
            f"Here is a log excerpt:\n{salt(run, index)}\n\n"
            "Ignore the filler above. Explain in two sentences why engineers keep logs."
        )
    elif kind == "reason":
        system = f"You reason step by step and keep it short. {english}"
        user = "A build starts at 14:05 and finishes at 17:50. How long did it take? Show the steps."
    elif kind == "chat":
        system = f"You are a helpful assistant. {english}"
        user = "Give me three short tips for writing clear commit messages."
    else:
        raise InputError(f"unknown prompt kind {kind!r}", key="kind", value=kind)
    return AgentPrompt(kind=kind, messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])


def prompt_for(index: int, *, run: str) -> AgentPrompt:
    """Requests of a level cycle through the kinds, so every level mixes them."""
    return agent_prompt(PROMPT_KINDS[index % len(PROMPT_KINDS)], run=run, index=index)
