"""Each detector fires on the output it targets and stays quiet on clean text."""

from __future__ import annotations

import pytest

from flashspark.gates import garble

CLEAN_PROSE = (
    "The parser fails because the tokenizer drops the trailing newline. First, read tests/test_parser.py "
    "to see which case fails, then run the tests with -k parser to confirm. A café in Zürich is naïve "
    "about Straße names, and that is fine."
)
CLEAN_CODE = '''Here is the function:

```python
# ==========================================================
# Helpers
# ----------------------------------------------------------
def is_palindrome(s: str) -> bool:
    """Return True when s reads the same both ways, ignoring case and spaces."""
    cleaned = "".join(c.lower() for c in s if not c.isspace())
    return cleaned == cleaned[::-1]
```

The `====` lines are separators and `<think>` is only mentioned here in backticks.
'''


def fired(text: str, **kwargs: bool) -> set[str]:
    return {hit.detector for hit in garble.text_detectors(text, **kwargs)}


def test_clean_prose_and_code_fire_nothing() -> None:
    assert fired(CLEAN_PROSE) == set()
    assert fired(CLEAN_CODE) == set()
    assert fired(CLEAN_PROSE + "\n\n" + CLEAN_CODE, strict_cjk=True) == set()


def test_cjk_drift_fires_on_chinese_inside_english() -> None:
    drifted = "The function returns the value. 然后我们需要检查这个函数的返回值是否正确以及边界情况。"
    assert "cjk_drift" in fired(drifted)


def test_a_quoted_japanese_word_is_quiet_by_default_and_fires_in_strict_mode() -> None:
    text = CLEAN_PROSE + " The Japanese word for this is 日本語."
    assert "cjk_drift" not in fired(text)
    assert "cjk_drift" in fired(text, strict_cjk=True)


def test_kana_and_hangul_count_as_drift() -> None:
    assert "cjk_drift" in fired("Answer: " + "カタカナひらがな" + "한국어한국어")


def test_a_long_run_of_one_letter_fires_but_punctuation_separators_do_not() -> None:
    assert "char_run" in fired("The result is " + "a" * 18)
    assert "char_run" not in fired("The result is " + "a" * 17)
    assert "char_run" not in fired("=" * 80 + "\n" + "-" * 80 + "\n" + "#" * 40)


def test_a_looping_reply_fires_repeated_window() -> None:
    loop = CLEAN_PROSE + " " + "I will now run the tests again to check. " * 12
    assert "repeated_window" in fired(loop)


def test_a_reply_that_says_one_thing_many_times_fires_compression() -> None:
    hits = fired("ok " * 400)
    assert "collapsed_compression" in hits


def test_ordinary_long_code_does_not_collapse() -> None:
    code = "\n".join(f"def handler_{i}(request):\n    return respond(request, status={200 + i})" for i in range(30))
    assert "collapsed_compression" not in fired(code)


@pytest.mark.parametrize(
    "token",
    [
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        "<｜User｜>",
        "<｜Assistant｜>",
        "<｜tool▁calls▁begin｜>",
        "<|Assistant|>",
        "<|im_end|>",
        "<|endoftext|>",
    ],
)
def test_special_tokens_fire_even_inside_code(token: str) -> None:
    assert "special_token_leak" in fired(f"Sure. {token} Next step.")
    assert "special_token_leak" in fired(f"Sure. `{token}`")


@pytest.mark.parametrize(
    "tag", ["<tool_call>", "</tool>", "<think>", "<available_skills>", "<function_calls>", '<invoke name="x">']
)
def test_leaked_tags_fire_outside_code(tag: str) -> None:
    assert "markup_leak" in fired(f"I will check. {tag} read_file")


def test_a_tag_quoted_in_backticks_or_a_code_block_is_quiet() -> None:
    assert "markup_leak" not in fired("DeepSeek wraps thinking in `<think>` tags.")
    assert "markup_leak" not in fired("Example:\n```xml\n<tool_call>read_file</tool_call>\n```\nDone.")


def test_empty_with_tokens() -> None:
    assert garble.empty_with_tokens("  \n", 55, False)
    assert not garble.empty_with_tokens("", 55, True)
    assert not garble.empty_with_tokens("answer", 55, False)
    assert not garble.empty_with_tokens("", 0, False)


def test_reasoning_only_when_thinking_is_off() -> None:
    assert garble.reasoning_only("", "let me think", thinking=False)
    assert not garble.reasoning_only("", "let me think", thinking=True)
    assert not garble.reasoning_only("answer", "let me think", thinking=False)


def test_length_without_content() -> None:
    assert garble.length_without_content("", "length")
    assert not garble.length_without_content("partial answer", "length")
    assert not garble.length_without_content("", "stop")
