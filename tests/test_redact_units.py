"""The redactor's parts one by one: which values are registered, the order exact values are masked
in, what each writer-facing function touches and leaves, and how a setting's name is split into
words (the one secret model)."""

from __future__ import annotations

import pytest

from flashspark.redact import MASK, add_masks, clear_masks, redact, redact_data, redact_exact
from flashspark.secrets import is_secret_name, name_words


def test_only_values_of_four_characters_or_more_are_registered() -> None:
    add_masks(["abcd", "xyz", None, ""])
    assert redact_exact("abcd xyz") == f"{MASK} xyz"
    clear_masks()
    assert redact_exact("abcd") == "abcd"


def test_the_longest_value_is_masked_first() -> None:
    add_masks(["secret", "secret-and-more"])
    assert redact_exact("[secret-and-more] [secret]") == f"[{MASK}] [{MASK}]"


def test_values_given_for_one_call_are_masked_in_that_call_only() -> None:
    assert redact("log sk-given-1 line", ["sk-given-1", "ab"]) == f"log {MASK} line"
    assert redact("log sk-given-1 line") == "log sk-given-1 line"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Bearer abcdef123", f"Authorization: Bearer {MASK}"),
        ("curl https://me:pa55word@host/x", f"curl https://me:{MASK}@host/x"),
        ("--api-key sk-123 --port 1", f"--api-key {MASK} --port 1"),
        ("{'api_key': ['sk-1'], 'port': 8}", f"{{'api_key': ['{MASK}'], 'port': 8}}"),
        ('HF_TOKEN="two words"', f"HF_TOKEN={MASK}"),
        ("apiKey: abc123 rest", f"apiKey: {MASK} rest"),
        ("hf_" + "a" * 24, MASK),
    ],
)
def test_each_shape_keeps_its_context_and_masks_the_value(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_the_exact_writer_leaves_text_that_only_names_a_secret() -> None:
    # A script or a template mentions secrets by name; only registered values and URL passwords go.
    text = "# VLLM_API_KEY: set from an owner-only env file\nexport HF_TOKEN_FILE=/run/x\n"
    assert redact_exact(text) == text
    assert redact_exact("http://u:pw-9@h:1") == f"http://u:{MASK}@h:1"


def test_data_is_masked_by_key_and_by_string_and_keeps_its_shape() -> None:
    add_masks(["registered-1"])
    data = {
        "HF_TOKEN": "hf-value",
        "api_key": "",  # nothing to hide
        "accessToken": 5,  # not a string: left as it is
        "key": "VLLM_API_KEY",  # a setting's name, not a secret
        "nested": [{"password": "p"}, ("url", "http://a:b@c"), "registered-1"],
        "plain": 1.5,
    }
    assert redact_data(data) == {
        "HF_TOKEN": MASK,
        "api_key": "",
        "accessToken": 5,
        "key": "VLLM_API_KEY",
        "nested": [{"password": MASK}, ["url", f"http://a:{MASK}@c"], MASK],
        "plain": 1.5,
    }
    assert redact_data({"HF_TOKEN": "hf-value", "u": "http://a:b@c"}, by_key=False) == {
        "HF_TOKEN": "hf-value",
        "u": f"http://a:{MASK}@c",
    }


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("HF_TOKEN", ["hf", "token"]),
        ("apiKey", ["api", "key"]),
        ("x-api-key", ["x", "api", "key"]),
        ("HTTPProxy2", ["http", "proxy", "2"]),
        ("nodes.0.env.DB_PASSWORD", ["nodes", "0", "env", "db", "password"]),
        ("MAX_NUM_BATCHED_TOKENS", ["max", "num", "batched", "tokens"]),
    ],
)
def test_a_name_is_split_into_words_in_any_case_style(name: str, words: list[str]) -> None:
    assert name_words(name) == words


@pytest.mark.parametrize(
    ("name", "secret"),
    [("auth", True), ("pwd", True), ("credential", True), ("apikey", True), ("monkey", False), ("tokens", False)],
)
def test_a_name_is_secret_by_a_whole_word(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_found_secrets_reads_secret_keys_and_shapes_at_any_depth() -> None:
    from flashspark.redact import found_secrets

    data = {
        "api_key": "sk-top-1234",
        "key": "not-a-secret-setting",  # a bare `key` names a setting in FlashSpark's payloads
        "nested": [{"HF_TOKEN": "hf_plain_value"}, ("Bearer abcdef123",)],
        "text": 'url https://user:pa55word@host/x and "password": "qwerty12"',
        "short": {"token": "abc"},
        "count": 3,
    }
    assert found_secrets(data) == {"sk-top-1234", "hf_plain_value", "abcdef123", "pa55word", "qwerty12"}
    assert found_secrets("hf_" + "B" * 22) == {"hf_" + "B" * 22}
    assert found_secrets({"token": ""}) == set()


def test_redact_headers_masks_credentials_by_name_and_redacts_the_rest() -> None:
    from flashspark.redact import redact_headers

    headers = {
        "Authorization": "Bearer x",
        "Proxy-Authorization": "Basic y",
        "Cookie": "a=b",
        "Set-Cookie": "c=d",
        "X-Api-Key": "k",
        "X-Note": "see token=abcdef99",
        "Accept": "text/event-stream",
    }
    assert redact_headers(headers) == {
        "Authorization": "***",
        "Proxy-Authorization": "***",
        "Cookie": "***",
        "Set-Cookie": "***",
        "X-Api-Key": "***",
        "X-Note": "see token=***",
        "Accept": "text/event-stream",
    }


def test_redact_values_masks_exactly_the_given_values_longest_first() -> None:
    from flashspark.redact import redact_values

    assert redact_values("a sk-long-secret and sk-long", ["sk-long", "sk-long-secret"]) == "a *** and ***"
    assert redact_values("abc stays", ["abc"]) == "abc stays"  # under four characters: not masked
    assert redact_values("token=plain", []) == "token=plain"  # no shapes here: exact values only
