from __future__ import annotations

from flashspark.gates.prompts import PROMPT_KINDS, prompt_for, salt


def test_salts_differ_from_their_first_word_so_no_prefix_is_shared() -> None:
    salts = [salt("run1", i) for i in range(6)] + [salt("run2", 0)]
    assert len({s.split()[0] for s in salts}) == len(salts)
    assert len(salts[0].split()) == 421


def test_the_same_run_and_index_give_the_same_prompt() -> None:
    assert prompt_for(3, run="r") == prompt_for(3, run="r")


def test_a_level_cycles_through_every_kind() -> None:
    assert [prompt_for(i, run="r").kind for i in range(len(PROMPT_KINDS))] == list(PROMPT_KINDS)
