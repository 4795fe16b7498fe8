"""Is a reply to a real harness request an answer? The recipe's replay scoring, as named checks.

The garble detectors (`gates.garble`) say a reply is broken. Replaying captured agent traffic, the
recipe's users also caught replies that were not broken text but were not answers either: a reply
that opens like the middle of something (a comma, a closing bracket, a list item), one that opens
with a Markdown heading where the harness asked a question, and one that recites the system prompt
back. Those are `suspicious`, not `garbled`: each has honest uses, so a person looks at them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from flashspark.client import ChatResult
from flashspark.gates import garble
from flashspark.gates.sanity import judge_reply

Verdict = Literal["healthy", "suspicious", "garbled", "error"]

# The shortest run of the system prompt, in characters, that counts as recited rather than quoted.
RECITED_CHARS = 80
_BROKEN_OPENING = re.compile(r"^\s*(?:[,.;:)\]}]|[-*+]\s|\d+[.)]\s)")
_HEADING = re.compile(r"^\s*#{1,6}\s")


def broken_opening(text: str) -> list[garble.Hit]:
    """The reply opens like the middle of something: continuing punctuation or a list item."""
    match = _BROKEN_OPENING.match(text)
    return [garble.Hit("broken_opening", f"opens with {match.group(0).strip()!r}")] if match else []


def heading_opening(text: str) -> list[garble.Hit]:
    """The reply opens with a Markdown heading (garble_tap's flag for a reply that is a document, not an answer)."""
    match = _HEADING.match(text)
    return [garble.Hit("heading_opening", text.strip().splitlines()[0][:60])] if match else []


def recited_prompt(text: str, system_prompt: str, *, min_chars: int = RECITED_CHARS) -> list[garble.Hit]:
    """A run of `min_chars` or more of the system prompt appears word for word in the reply."""
    if len(system_prompt) < min_chars or len(text) < min_chars:
        return []
    # Every window of the reply at a stride of half the length: a recited run of min_chars contains
    # one of them whole, so a hit is never missed and the scan stays linear in the reply.
    step = min_chars // 2
    for start in range(0, len(text) - step + 1, step):
        window = text[start : start + step]
        where = system_prompt.find(window)
        while where >= 0:  # every place the window occurs: the run may be at any of them
            before, after = _extend(text, start, step, system_prompt, where)
            if after - before >= min_chars:
                return [garble.Hit("recited_prompt", f"{after - before} characters of the system prompt")]
            where = system_prompt.find(window, where + 1)
    return []


def _extend(text: str, start: int, length: int, prompt: str, where: int) -> tuple[int, int]:
    """Grow a shared window both ways while reply and prompt agree; the reply's span."""
    left, right = start, start + length
    p_left, p_right = where, where + length
    while left > 0 and p_left > 0 and text[left - 1] == prompt[p_left - 1]:
        left, p_left = left - 1, p_left - 1
    while right < len(text) and p_right < len(prompt) and text[right] == prompt[p_right]:
        right, p_right = right + 1, p_right + 1
    return left, right


def system_text(messages: list[dict[str, Any]]) -> str:
    """The system (or developer) messages' text, parts joined."""
    texts = []
    for message in messages:
        if message.get("role") not in ("system", "developer"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [str(part.get("text", "")) for part in content if isinstance(part, dict)]
    return "\n".join(texts)


def score_answer(result: ChatResult, messages: list[dict[str, Any]]) -> tuple[Verdict, list[garble.Hit]]:
    """The verdict on one reply to `messages` and every hit behind it."""
    if not result.ok:
        return "error", []
    broken = judge_reply(result, strict_cjk=False)
    if broken:
        return "garbled", broken
    if result.tool_calls and not result.content.strip():
        return "healthy", []  # a tool call is the answer
    odd = [
        *broken_opening(result.content),
        *heading_opening(result.content),
        *recited_prompt(result.content, system_text(messages)),
    ]
    return ("suspicious", odd) if odd else ("healthy", [])
