"""Garble detectors: each a small named function with its own thresholds.

They look for what agent users of the recipe actually saw: CJK drift in
English replies, repetition loops, leaked template/special tokens and tool or
schema XML, and empty replies that still billed tokens. Each returns a list of
`Hit`s (empty = clean), so a report can say which detector fired and why.

How legitimate text is kept quiet:
- non-English words in Latin script (café, Straße, naïve) are not CJK at all;
  a few CJK characters (a quoted word) stay under the default count-and-share
  threshold — strict mode fires on any;
- repeated punctuation (`====`, `----`, `####` separators in code) is not a
  character run: only letters and digits count;
- a tag quoted in backticks or a fenced code block (`<think>`) is discussion,
  not leakage, so tags are searched outside code; DeepSeek/ChatML special tokens
  are never legitimate output and fire anywhere.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    detector: str
    detail: str


# --- CJK drift ------------------------------------------------------------------------

_CJK = re.compile(
    "[\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]"  # hangul
)
CJK_MAX_COUNT = 5
CJK_MAX_SHARE = 0.05


def cjk_drift(text: str, *, strict: bool = False) -> list[Hit]:
    """CJK, kana or hangul in an English reply: any in strict mode, else more than 5 and more than 5 %."""
    found = _CJK.findall(text)
    if not found:
        return []
    visible = sum(1 for c in text if not c.isspace()) or 1
    share = len(found) / visible
    if strict or (len(found) > CJK_MAX_COUNT and share > CJK_MAX_SHARE):
        sample = "".join(found[:12])
        return [Hit("cjk_drift", f"{len(found)} CJK/kana/hangul characters ({share:.0%}): {sample!r}")]
    return []


# --- repetition -----------------------------------------------------------------------

CHAR_RUN = 18  # the recipe's rule: one character 18 times in a row
_CHAR_RUN = re.compile(r"([^\W_])\1{" + str(CHAR_RUN - 1) + ",}")
WINDOW = 40
WINDOW_MAX_REPEATS = 4
WINDOW_MIN_BODY = 240
COMPRESSION_MIN_BODY = 600
COMPRESSION_FLOOR = 0.10


def char_run(text: str) -> list[Hit]:
    """One letter or digit repeated 18+ times in a row (punctuation separators do not count)."""
    match = _CHAR_RUN.search(text)
    return [Hit("char_run", f"{match.group(1)!r} x{len(match.group(0))}")] if match else []


def repeated_window(text: str) -> list[Hit]:
    """The 40-character window at -240..-200 occurs more than 4 times: the reply is looping."""
    if len(text) <= WINDOW_MIN_BODY:
        return []
    window = text[-WINDOW_MIN_BODY : -WINDOW_MIN_BODY + WINDOW]
    if not window.strip():
        return []
    count = text.count(window)
    if count > WINDOW_MAX_REPEATS:
        return [Hit("repeated_window", f"{window!r} occurs {count} times")]
    return []


def collapsed_compression(text: str) -> list[Hit]:
    """A long reply that compresses below 10 % of its size says almost nothing, many times."""
    data = text.encode()
    if len(data) < COMPRESSION_MIN_BODY:
        return []
    ratio = len(zlib.compress(data, 9)) / len(data)
    return [Hit("collapsed_compression", f"compresses to {ratio:.1%}")] if ratio < COMPRESSION_FLOOR else []


# --- leaked tokens and markup ---------------------------------------------------------

# DeepSeek's special tokens use full-width bars and U+2581 word separators; ASCII
# look-alikes and ChatML tokens leak through other templates.
_SPECIAL = re.compile(
    r"<[｜|]\s*(?:begin[▁_ ]of[▁_ ]sentence|end[▁_ ]of[▁_ ]sentence|User|Assistant|System"
    r"|tool[▁_ ]calls?[▁_ ](?:begin|end)|tool[▁_ ]outputs?[▁_ ](?:begin|end)|tool[▁_ ]sep"
    r"|fim[▁_ ](?:begin|hole|end)|im_start|im_end|endoftext|eot_id|start_header_id|end_header_id)\s*[｜|]>",
    re.IGNORECASE,
)
_TAGS = re.compile(
    r"</?(?:tool(?:_call|_calls|_result|_use)?|think|available_skills|function_calls?|invoke|parameter"
    r"|antml:[a-z_]+|system-reminder|DSML[a-z_:]*)\b[^>]{0,200}>?",
    re.IGNORECASE,
)
_FENCED = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE = re.compile(r"`[^`\n]+`")


def strip_code(text: str) -> str:
    """The text outside fenced blocks and inline code spans."""
    return _INLINE.sub(" ", _FENCED.sub(" ", text))


def special_token_leak(text: str) -> list[Hit]:
    """DeepSeek/ChatML special tokens (ASCII or full-width) in the visible reply, anywhere."""
    matches = sorted({m.group(0) for m in _SPECIAL.finditer(text)})
    return [Hit("special_token_leak", ", ".join(matches[:5]))] if matches else []


def markup_leak(text: str) -> list[Hit]:
    """Tool/schema/thinking tags (`<tool`, `</tool`, `<think>`, `<available_skills` ...) outside code."""
    matches = sorted({m.group(0)[:40] for m in _TAGS.finditer(strip_code(text))})
    return [Hit("markup_leak", ", ".join(matches[:5]))] if matches else []


# --- empty and truncated replies ------------------------------------------------------


def empty_with_tokens(content: str, completion_tokens: int | None, has_tool_calls: bool) -> list[Hit]:
    """No visible content, no tool call, yet tokens were billed (the "soft failure" of issue #6)."""
    if content.strip() or has_tool_calls or not completion_tokens:
        return []
    return [Hit("empty_with_tokens", f"{completion_tokens} completion tokens, empty content")]


def reasoning_only(content: str, reasoning: str, thinking: bool) -> list[Hit]:
    """Reasoning text but no answer while thinking is off."""
    if thinking or content.strip() or not reasoning.strip():
        return []
    return [Hit("reasoning_only", f"{len(reasoning)} characters of reasoning, no answer")]


def length_without_content(content: str, finish_reason: str | None) -> list[Hit]:
    """Stopped at max_tokens with nothing to show."""
    if finish_reason == "length" and not content.strip():
        return [Hit("length_without_content", "finish_reason length, empty content")]
    return []


def text_detectors(text: str, *, strict_cjk: bool = False) -> list[Hit]:
    """Every detector that reads only the reply text."""
    return [
        *cjk_drift(text, strict=strict_cjk),
        *char_run(text),
        *repeated_window(text),
        *collapsed_compression(text),
        *special_token_leak(text),
        *markup_leak(text),
    ]
