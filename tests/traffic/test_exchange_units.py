"""What a recording keeps of a request: every secret it shows found, its body masked or cut, the added
latency summarised exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashspark.errors import InputError
from flashspark.traffic.exchange import Exchange, LatencyStats, read_exchanges, recorded_body, request_secrets


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer tok-123456"}, {"Bearer tok-123456", "tok-123456"}),
        ({"authorization": "Basic dXNlcjpwdw=="}, {"Basic dXNlcjpwdw==", "dXNlcjpwdw=="}),
        ({"Cookie": "sid=abcdef"}, {"sid=abcdef"}),
        ({"X-Api-Key": "raw-key-987"}, {"raw-key-987"}),
        ({"X-Trace": "not-a-secret-1"}, set()),
        ({"Authorization": "Bearer a b c"}, {"Bearer a b c", "a b c"}),
        ({"Authorization": "abc"}, set()),  # under four characters: too likely by chance to mask
        ({"Authorization": "abcd"}, {"abcd"}),
    ],
)
def test_credential_headers_are_secrets_with_and_without_their_scheme(
    headers: dict[str, str], expected: set[str]
) -> None:
    assert request_secrets(headers, b"") == expected


def test_a_json_bodys_secret_keys_and_shapes_are_found_beside_the_headers() -> None:
    body = json.dumps(
        {
            "api_key": "sk-body-1111",
            "messages": [{"role": "user", "content": "my token is hf_" + "A" * 24}],
            "max_tokens": 5,
        }
    ).encode()
    found = request_secrets({"Authorization": "Bearer sk-head-2222"}, body)
    assert {"sk-body-1111", "hf_" + "A" * 24, "sk-head-2222", "Bearer sk-head-2222"} == found


def test_a_body_that_is_not_json_is_searched_as_text() -> None:
    assert request_secrets({}, b"password=hunter2-long and more") == {"hunter2-long"}
    assert request_secrets({}, b"\xff\xfe not utf-8 Bearer abcdef123") == {"abcdef123"}


def test_a_recorded_json_body_is_masked_by_key_and_shape() -> None:
    body = json.dumps({"api_key": "sk-1234567", "messages": [{"content": "Bearer zyxwvu987"}], "n": 2}).encode()
    assert recorded_body(body, 100) == {"api_key": "***", "messages": [{"content": "Bearer ***"}], "n": 2}


def test_a_body_that_is_not_json_is_kept_as_text_cut_at_the_limit() -> None:
    assert recorded_body(b"plain text here", 100) == "plain text here"
    assert recorded_body(b"x" * 10, 10) == "x" * 10  # exactly the limit: nothing cut
    assert recorded_body(b"abcdefghij-more", 10) == "abcdefghij... (5 more bytes)"
    assert recorded_body(b"token=abcdef123 rest", 100) == "token=*** rest"
    assert recorded_body(b"\xffok", 10) == "\ufffdok"


def test_latency_stats_are_exact_percentiles_in_microseconds() -> None:
    assert LatencyStats.of([]) is None
    assert LatencyStats.of([5_000]) == LatencyStats(chunks=1, p50_us=5.0, p99_us=5.0, max_us=5.0)
    values = [i * 1_000 for i in range(1, 201)]  # 1..200 µs, shuffled below
    stats = LatencyStats.of(values[::-1])
    assert stats == LatencyStats(chunks=200, p50_us=100.5, p99_us=199.0, max_us=200.0)
    assert LatencyStats.of([1_234, 5_678]) == LatencyStats(chunks=2, p50_us=3.5, p99_us=5.7, max_us=5.7)


def test_recorded_exchanges_read_back_in_order_and_a_missing_file_is_named(tmp_path: Path) -> None:
    one = Exchange(
        id="a", started_at="t", offset_s=0.0, method="GET", path="/v1/models", request_headers={}, request=None
    )
    two = one.model_copy(update={"id": "b", "method": "POST", "path": "/v1/chat/completions?x=1"})
    path = tmp_path / "exchanges.jsonl"
    path.write_text(one.model_dump_json() + "\n" + two.model_dump_json() + "\n")
    assert [e.id for e in read_exchanges(path)] == ["a", "b"]
    assert [e.is_chat for e in read_exchanges(path)] == [False, True]
    with pytest.raises(InputError) as caught:
        read_exchanges(tmp_path / "missing.jsonl")
    assert caught.value.where == str(tmp_path / "missing.jsonl") and "cannot read" in caught.value.message


def test_an_exchange_is_flagged_by_its_flags_or_a_bad_verdict() -> None:
    base = Exchange(
        id="a", started_at="t", offset_s=0.0, method="POST", path="/v1/chat/completions", request_headers={}, request={}
    )
    assert not base.flagged and not base.model_copy(update={"verdict": "healthy"}).flagged
    assert base.model_copy(update={"verdict": "garbled"}).flagged
    assert base.model_copy(update={"verdict": "suspicious"}).flagged
    assert not base.model_copy(update={"verdict": "error"}).flagged
    assert base.model_copy(update={"flags": [{"detector": "x", "detail": "y"}]}).flagged
    assert not base.model_copy(update={"method": "GET"}).is_chat
