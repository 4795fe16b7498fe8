"""Secrets never leave in text FlashSpark writes: the recipe's own values and token-shaped strings."""

from __future__ import annotations

from flashspark.redact import MASK, redact


def test_the_recipes_secret_values_are_masked_wherever_they_appear() -> None:
    text = 'env: ["VLLM_API_KEY=sk-local-1234abcd", "X=1"] and later --api-key sk-local-1234abcd'
    clean = redact(text, ["sk-local-1234abcd"])
    assert "sk-local-1234abcd" not in clean and clean.count(MASK) == 2 and '"X=1"' in clean


def test_token_shapes_from_elsewhere_are_masked_too() -> None:
    text = (
        "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz012345\n"
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload\n"
        '"OPENAI_API_KEY": "sk-live-zzzzzzzzzzzz"\n'
        "MY_SECRET: s3cr3t-value\n"
    )
    clean = redact(text)
    for leaked in ("hf_abcdefghijklmnopqrstuvwxyz012345", "eyJhbGciOiJIUzI1NiJ9", "sk-live-zzzzzzzzzzzz", "s3cr3t"):
        assert leaked not in clean
    assert "HF_TOKEN=***" in clean and "Bearer ***" in clean


def test_ordinary_log_lines_are_left_alone() -> None:
    line = "INFO [parallel_state.py:2350] rank 0 in world size 2 is assigned as DP rank 0, TP rank 0; tokens=512"
    assert redact(line, ["x"]) == line  # values shorter than 4 characters are never masked


def test_secrets_in_urls_arguments_headers_and_other_spellings_are_masked() -> None:
    cases = {
        "proxy http://alice:hunter2pass@proxy.example:3128/": "hunter2pass",
        "GET /cb?access_token=abcdef123456 HTTP/1.1": "abcdef123456",
        "non-default args: {'api_key': ['sk-from-vllm-log'], 'port': 8000}": "sk-from-vllm-log",
        "vllm serve m --api-key sk-argv-secret --port 1": "sk-argv-secret",
        "x-api-key: sk-header-secret": "sk-header-secret",
        "Authorization: Basic YWxpY2U6aHVudGVyMg==": "YWxpY2U6aHVudGVyMg",
        '{"apiKey": "sk-camel-secret"}': "sk-camel-secret",
        'PASSWORD="two words secret"': "two words secret",
        "HUGGING_FACE_HUB_TOKEN=hub-secret-value": "hub-secret-value",
    }
    for text, secret in cases.items():
        clean = redact(text)
        assert secret not in clean and MASK in clean, (text, clean)
    assert redact("args: {'api_key': ['sk-x'], 'port': 8000}").endswith("'port': 8000}")
    assert redact("see http://example.com/path and tokens=512 max_tokens: 16") == (
        "see http://example.com/path and tokens=512 max_tokens: 16"
    )
