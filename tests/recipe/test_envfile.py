from __future__ import annotations

import pytest

from flashspark.errors import RecipeError
from flashspark.recipe.envfile import parse_env_text


def values(text: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    return {k: e.value for k, e in parse_env_text(text, source="t.env", environ=environ).items()}


def test_reads_plain_export_and_quoted_values() -> None:
    text = "A=1\nexport B=two\nC='single $A'\nD=\"double $A\"\n"
    assert values(text) == {"A": "1", "B": "two", "C": "single $A", "D": "double 1"}


def test_comments_and_blank_lines_are_skipped_and_inline_comment_cut() -> None:
    text = "# header\n\nA=value # trailing note\nB=with#hash\n"
    assert values(text) == {"A": "value", "B": "with#hash"}


def test_expansion_uses_earlier_keys_then_process_environment_and_defaults() -> None:
    text = "HF_CACHE=${HOME}/.cache/hf\nWORKER_HF_CACHE=${HF_CACHE}\nX=${UNSET:-fallback}\n"
    got = values(text, environ={"HOME": "/home/u"})
    assert got == {"HF_CACHE": "/home/u/.cache/hf", "WORKER_HF_CACHE": "/home/u/.cache/hf", "X": "fallback"}


def test_later_lines_win_and_line_numbers_are_kept() -> None:
    entries = parse_env_text("A=1\nB=2\nA=3\n", source="t.env")
    assert entries["A"].value == "3"
    assert entries["A"].line == 3


def test_a_line_that_is_not_key_value_names_file_and_line() -> None:
    with pytest.raises(RecipeError) as caught:
        parse_env_text("A=1\nthis is wrong\n", source="cluster.env")
    assert caught.value.where == "cluster.env:2"


def test_command_substitution_is_refused() -> None:
    with pytest.raises(RecipeError, match="command substitution"):
        parse_env_text("A=$(hostname)\n", source="t.env")


def test_unterminated_quote_is_refused() -> None:
    with pytest.raises(RecipeError, match="unterminated"):
        parse_env_text('A="open\n', source="t.env")
