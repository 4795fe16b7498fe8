"""Every garble detector at its boundary, with its exact finding: one step inside is clean, one step
past fires, and the detail names what fired. (Planted-bug runs flip these comparisons; these tests
are what notices.)"""

from __future__ import annotations

import zlib

import pytest

from flashspark.gates import garble
from flashspark.gates.garble import Hit

PAD = "a" * 113  # 113 visible Latin letters


def test_cjk_fires_past_five_characters_and_past_five_percent_of_the_visible_text() -> None:
    # 6 CJK of 119 visible characters (5.04 %); the spaces do not count as visible.
    assert garble.cjk_drift("中" * 6 + " " * 200 + PAD) == [
        Hit("cjk_drift", "6 CJK/kana/hangul characters (5%): '中中中中中中'")
    ]
    assert garble.cjk_drift("中" * 6 + PAD + "a") == []  # 6 of 120: exactly 5 %, not past it
    assert garble.cjk_drift("中" * 5) == []  # 100 %, but only 5 characters
    assert garble.cjk_drift("中") == []  # strict is off unless asked for
    assert garble.cjk_drift("中", strict=True) == [Hit("cjk_drift", "1 CJK/kana/hangul characters (100%): '中'")]


def test_the_cjk_sample_is_the_first_twelve_characters() -> None:
    text = "".join(chr(0x4E00 + i) for i in range(13))
    [hit] = garble.cjk_drift(text)
    assert hit.detail == f"13 CJK/kana/hangul characters (100%): {text[:12]!r}"


def test_a_character_run_fires_at_eighteen_letters_or_digits_not_seventeen_and_not_punctuation() -> None:
    assert garble.char_run("x " + "a" * 18) == [Hit("char_run", "'a' x18")]
    assert garble.char_run("7" * 25) == [Hit("char_run", "'7' x25")]
    assert garble.char_run("a" * 17) == []
    assert garble.char_run("=" * 40 + "_" * 40 + "-" * 40) == []


WINDOW = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"  # 40 characters
TAIL = "0123456789" * 20  # 200 characters that never contain the window


@pytest.mark.parametrize(("copies", "fires"), [(4, False), (5, True)])
def test_a_window_repeated_more_than_four_times_is_a_loop(copies: int, fires: bool) -> None:
    found = garble.repeated_window(WINDOW * copies + TAIL)
    assert found == ([Hit("repeated_window", f"{WINDOW!r} occurs {copies} times")] if fires else [])


def test_the_window_check_needs_more_than_240_characters_and_a_visible_window() -> None:
    assert garble.repeated_window(("abcd" * 60)[:240]) == []  # exactly 240: too short to judge
    assert garble.repeated_window("abcd" * 61)[0].detector == "repeated_window"  # 244: judged, and looping
    assert garble.repeated_window(" " * 80 + TAIL) == []  # a blank window is layout, not a loop


def test_compression_is_judged_from_600_bytes_and_fires_below_a_tenth() -> None:
    looping = ("ab" * 300).encode()
    ratio = len(zlib.compress(looping, 9)) / len(looping)
    assert garble.collapsed_compression("ab" * 300) == [Hit("collapsed_compression", f"compresses to {ratio:.1%}")]
    assert garble.collapsed_compression("ab" * 299 + "a") == []  # 599 bytes: too short to judge


def test_compression_at_exactly_a_tenth_is_not_collapsed() -> None:
    # Find a text that compresses to exactly 10 % (zlib computed here, not by the detector).
    for random_part in range(0, 400):
        for length in range(600, 1400, 10):
            head = "".join(chr(33 + (i * 7919 + i * i) % 90) for i in range(random_part))
            text = head + "z" * (length - random_part)
            if length - random_part > 0 and len(zlib.compress(text.encode(), 9)) * 10 == len(text.encode()):
                assert garble.collapsed_compression(text) == []
                assert garble.collapsed_compression(text + "z" * 10) != []  # a little more repetition fires
                return
    pytest.fail("no text compressing to exactly 10 % was found")


def test_code_is_blanked_out_before_tags_are_searched() -> None:
    assert garble.strip_code("a `<think>` b ```x\n<tool_call>\n``` c") == "a   b   c"
    assert garble.markup_leak("see `<think>` and\n```\n<tool_call>\n```") == []
    assert garble.markup_leak("<think>hmm</think>") == [Hit("markup_leak", "</think>, <think>")]


def test_leak_details_list_the_first_five_sorted_and_cut_long_tags() -> None:
    tokens = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<|User|>", "<|System|>"]
    [hit] = garble.special_token_leak(" ".join(tokens))
    assert hit == Hit("special_token_leak", ", ".join(sorted(tokens)[:5]))
    tags = ["<invoke>", "<parameter>", "<think>", "<tool>", "<tool_call>", "<function_calls>"]
    [hit] = garble.markup_leak(" ".join(tags))
    assert hit == Hit("markup_leak", ", ".join(sorted(tags)[:5]))
    long_tag = "<tool_call name='" + "x" * 60 + "'>"
    assert garble.markup_leak(long_tag) == [Hit("markup_leak", long_tag[:40])]


def test_empty_reasoning_only_and_length_findings_are_exact() -> None:
    assert garble.empty_with_tokens("  ", 7, has_tool_calls=False) == [
        Hit("empty_with_tokens", "7 completion tokens, empty content")
    ]
    assert garble.empty_with_tokens("  ", 7, has_tool_calls=True) == []
    assert garble.empty_with_tokens("", 0, has_tool_calls=False) == []
    assert garble.reasoning_only(" ", "abc", thinking=False) == [
        Hit("reasoning_only", "3 characters of reasoning, no answer")
    ]
    assert garble.reasoning_only(" ", "abc", thinking=True) == []
    assert garble.reasoning_only("ok", "abc", thinking=False) == []
    assert garble.reasoning_only("", "  ", thinking=False) == []
    assert garble.length_without_content(" ", "length") == [
        Hit("length_without_content", "finish_reason length, empty content")
    ]
    assert garble.length_without_content("x", "length") == [] == garble.length_without_content("", "stop")


def test_text_detectors_run_every_text_detector_and_pass_strict_on() -> None:
    text = "中 " + "a" * 18 + " <|im_end|> <think>"
    kinds = [hit.detector for hit in garble.text_detectors(text, strict_cjk=True)]
    assert kinds == ["cjk_drift", "char_run", "special_token_leak", "markup_leak"]
    assert "cjk_drift" not in [hit.detector for hit in garble.text_detectors(text)]
