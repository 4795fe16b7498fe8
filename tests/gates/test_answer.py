"""The answer scoring of replayed traffic: each check at the edge where it starts to fire."""

from __future__ import annotations

import pytest

from flashspark.client import ChatResult
from flashspark.gates.answer import (
    RECITED_CHARS,
    broken_opening,
    heading_opening,
    recited_prompt,
    score_answer,
    system_text,
)

PROMPT = (
    "You are Hermes, an agent that edits repositories. Always answer in English, cite file paths, "
    "never run destructive commands, and ask for context when a request is ambiguous."
)


@pytest.mark.parametrize("text", [", and then it", ". Next", ") so", "] x", "- item one", "* item", "3. third", "2) b"])
def test_a_reply_that_opens_mid_sentence_or_as_a_list_is_a_broken_opening(text: str) -> None:
    assert [h.detector for h in broken_opening(text)] == ["broken_opening"]


@pytest.mark.parametrize("text", ["Sure, here it is.", "3 files changed.", "-5 degrees", "yes.", "(see below)", ""])
def test_ordinary_openings_are_not_broken(text: str) -> None:
    assert broken_opening(text) == []


def test_a_heading_opens_only_at_the_start_and_needs_its_space() -> None:
    assert heading_opening("## Plan\nFirst...")[0].detail == "## Plan"
    assert heading_opening("  # Title") != []
    assert heading_opening("#hashtag is not a heading") == []
    assert heading_opening("Intro\n# Heading later") == []
    assert heading_opening("####### seven is not a heading") == []


def test_a_recited_run_of_the_system_prompt_fires_from_its_threshold() -> None:
    run = PROMPT[10 : 10 + RECITED_CHARS]
    assert (
        recited_prompt(f"Well: {run} is my brief.", PROMPT)[0].detail
        == f"{RECITED_CHARS} characters of the system prompt"
    )
    assert recited_prompt(f"Well: {run[:-1]}# is my brief.", PROMPT) == []  # one character short
    longer = PROMPT[5:140]
    assert recited_prompt(f"x{longer}y", PROMPT)[0].detail == f"{len(longer)} characters of the system prompt"


def test_a_recited_run_is_found_whichever_place_of_the_prompt_repeats_its_window() -> None:
    window = "ask for context " * 3  # the first occurrence of a window is not the recited one
    prompt = window + "|" + window + "then carry on with the edits as planned and report"
    reply = "I will " + window + "then carry on with the edits as planned and report back."
    assert recited_prompt(reply, prompt, min_chars=60) != []


def test_short_prompts_and_replies_never_count_as_recited() -> None:
    assert recited_prompt(PROMPT, PROMPT[: RECITED_CHARS - 1]) == []
    assert recited_prompt(PROMPT[: RECITED_CHARS - 1], PROMPT) == []


def test_system_text_joins_system_and_developer_messages_and_their_parts() -> None:
    messages = [
        {"role": "system", "content": "one"},
        {"role": "user", "content": "not this"},
        {"role": "developer", "content": [{"type": "text", "text": "two"}, "junk"]},
    ]
    assert system_text(messages) == "one\ntwo"


def _result(content: str = "", **kwargs: object) -> ChatResult:
    return ChatResult.model_validate({"ok": True, "content": content, "completion_tokens": 5, **kwargs})


def test_the_verdicts_in_order_of_weight() -> None:
    messages = [{"role": "system", "content": PROMPT}]
    assert score_answer(ChatResult(ok=False, error="HTTP 500"), messages) == ("error", [])
    verdict, hits = score_answer(_result("## Answer <|im_end|>"), messages)
    assert verdict == "garbled" and [h.detector for h in hits] == ["special_token_leak"]  # garbled wins
    assert score_answer(_result("## Answer\nDone."), messages)[0] == "suspicious"
    assert score_answer(_result(f"Sure. {PROMPT}"), messages)[0] == "suspicious"
    assert score_answer(_result("Sure, which file do you mean?"), messages) == ("healthy", [])
    call = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert score_answer(_result("", tool_calls=call), messages) == ("healthy", [])
    assert score_answer(_result(""), messages)[0] == "garbled"  # tokens billed, nothing to show
