"""Folding SSE payloads into a stream's state, on both paths: the typed fast path and the forgiving
one a chunk of unexpected types falls back to (forced here by a stray non-object choice, which both
paths must skip). Every field of the state is asserted, and the time a token first arrived."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flashspark.client.chunks import StreamState, apply_event, merge_tool_calls


def fold(*chunks: Any, untyped: bool = False) -> StreamState:
    """Apply each chunk at t = 1, 2, 3 ... seconds; `untyped` forces the fallback path."""
    stream = StreamState()
    for now, chunk in enumerate(chunks, start=1):
        if untyped and isinstance(chunk, dict):
            chunk = {**chunk, "choices": [0, *chunk.get("choices", [])]}  # a stray choice first
        payload = chunk if isinstance(chunk, bytes) else json.dumps(chunk).encode()
        apply_event(payload, stream, float(now))
    return stream


def choice(finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


PATHS = pytest.mark.parametrize("untyped", [False, True], ids=["typed", "untyped"])


@PATHS
def test_every_field_of_a_chunk_lands_where_it_belongs(untyped: bool) -> None:
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    stream = fold(
        {"id": "req-1", "choices": [choice(role="assistant", content="")]},
        {"id": "req-2", "choices": [choice(reasoning="think")]},
        {"choices": [choice(content="Hi")]},
        {"choices": [choice(tool_calls=[call])]},
        {"choices": [choice(finish="tool_calls")]},
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}},
        untyped=untyped,
    )
    assert stream.request_id == "req-1"  # the first chunk's id is kept
    assert (stream.reasoning, stream.content, stream.tool_calls) == (["think"], ["Hi"], [call])
    assert (stream.finish_reason, stream.prompt_tokens, stream.completion_tokens) == ("tool_calls", 11, 4)
    # The role chunk carries no token: the first token is the reasoning at t=2, the first answer at t=3.
    assert (stream.ttft, stream.ttfo, stream.last, stream.chunk_times) == (2.0, 3.0, 4.0, [2.0, 3.0, 4.0])
    assert stream.error is None and not stream.done


@PATHS
def test_reasoning_content_is_read_where_a_server_still_sends_it(untyped: bool) -> None:
    assert fold({"choices": [choice(reasoning_content="r")]}, untyped=untyped).reasoning == ["r"]


@PATHS
def test_one_choice_carrying_a_token_marks_the_chunk_even_if_the_next_does_not(untyped: bool) -> None:
    stream = fold({"choices": [choice(content="a"), choice(finish="stop")]}, untyped=untyped)
    assert stream.chunk_times == [1.0] and stream.ttft == 1.0 and stream.finish_reason == "stop"


@PATHS
def test_a_chunk_with_only_a_finish_reason_is_not_a_token(untyped: bool) -> None:
    stream = fold({"choices": [choice(finish="length")]}, untyped=untyped)
    assert stream.ttft is None and stream.chunk_times == [] and stream.finish_reason == "length"


@PATHS
@pytest.mark.parametrize(
    ("error", "message"),
    [({"message": "boom", "code": 500}, "error in the stream: boom"), ("plain", "error in the stream: plain")],
)
def test_an_error_in_the_stream_fails_it_with_the_servers_message(untyped: bool, error: Any, message: str) -> None:
    stream = fold({"choices": [choice(content="a")]}, {"error": error}, untyped=untyped)
    assert (stream.error_kind, stream.error) == ("stream_error", message)


def test_an_error_object_without_a_message_is_shown_whole() -> None:
    stream = fold({"error": {"code": 500}})
    assert stream.error == "error in the stream: {'code': 500}"


def test_what_is_not_json_fails_the_stream_naming_the_first_120_bytes() -> None:
    junk = b"x" * 200
    stream = fold(junk)
    assert (stream.error_kind, stream.error) == ("malformed", f"not JSON in the stream: {junk[:120]!r}")
    stream = fold(b"[1, " + b"2, " * 100 + b"3]")
    assert stream.error_kind == "malformed" and stream.error == f"unexpected event: {(b'[1, ' + b'2, ' * 100)[:120]!r}"


def test_the_first_failure_is_the_one_kept() -> None:
    stream = fold(b"not json", {"error": "later"})
    assert stream.error_kind == "malformed" and stream.error.startswith("not JSON")


def test_done_ends_the_stream_with_or_without_spaces() -> None:
    assert fold(b"[DONE]").done and fold(b" [DONE] ").done


def test_fields_of_the_wrong_type_are_ignored_on_the_forgiving_path() -> None:
    stream = fold(
        {"id": 7, "choices": {"not": "a list"}, "usage": {"prompt_tokens": "11", "completion_tokens": 3}},
        {"id": "late", "choices": [{"delta": "text", "finish_reason": 5}, choice(content=["x"], tool_calls="y")]},
    )
    assert stream.request_id == "late" and stream.prompt_tokens is None and stream.completion_tokens == 3
    assert stream.content == [] and stream.tool_calls == [] and stream.finish_reason is None and stream.error is None


def test_a_later_usage_chunk_only_overwrites_the_counts_it_carries() -> None:
    stream = fold({"usage": {"prompt_tokens": 9}}, {"usage": {"completion_tokens": 2}})
    assert (stream.prompt_tokens, stream.completion_tokens) == (9, 2)


def test_the_result_carries_every_field_of_the_stream() -> None:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    stream = fold(
        {"id": "req-9", "choices": [choice(reasoning="a"), choice(reasoning="b")]},
        {
            "choices": [choice(content="x", tool_calls=[call], finish="stop")],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        },
    )
    stream.ttfb, stream.status = 0.5, 200
    result = stream.result(started_at=1000.0, e2e=2.5)
    assert result.model_dump() == {
        "ok": True,
        "error": None,
        "error_kind": None,
        "status_code": 200,
        "request_id": "req-9",
        "content": "x",
        "reasoning": "ab",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "finish_reason": "stop",
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "started_at": 1000.0,
        "ttfb_s": 0.5,
        "ttft_s": 1.0,
        "ttfo_s": 2.0,
        "last_token_s": 2.0,
        "e2e_s": 2.5,
        "chunk_times_s": [1.0, 2.0],
        "token_marks": [(1, 2)],
    }


def test_streamed_tool_call_deltas_are_assembled_into_whole_calls_by_index() -> None:
    deltas = [
        {"index": 0, "id": "call-a", "type": "function", "function": {"name": "get_weather"}},
        {"index": 1, "id": "call-b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 1, "function": {"arguments": '{"city": "Oslo"}'}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
        {"index": 0, "function": {"name": "ignored-later-name"}},
    ]
    assert merge_tool_calls(deltas) == [
        {"id": "call-a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call-b", "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'}},
    ]


def test_a_delta_without_an_index_continues_the_last_call_and_junk_is_skipped() -> None:
    deltas: list[Any] = [
        "junk",
        {"id": "c", "function": {"name": "f", "arguments": '{"a"'}},
        {"function": {"arguments": ": 1}"}},
        {"index": 2, "function": {"name": 7, "arguments": None}},
    ]
    merged = merge_tool_calls(deltas)
    assert merged[0] == {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    assert merged[1] == {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
    assert len(merged) == 2


def test_continuous_usage_marks_where_each_token_count_was_reached_in_the_text() -> None:
    stream = fold(
        {"choices": [choice(content="ab")], "usage": {"completion_tokens": 1}},
        {"choices": [choice(reasoning="r")], "usage": {"completion_tokens": 2}},
        {"choices": [choice(content="cde")], "usage": {"completion_tokens": 4}},
        {"choices": [choice(content="f")]},
        {"choices": [], "usage": {"completion_tokens": 5}},
    )
    # content chars after each chunk that carried a token and cumulative usage; the final usage-only
    # chunk carries no token, and a chunk without usage leaves no mark
    assert stream.token_marks == [(2, 1), (2, 2), (5, 4)]
    assert stream.content_chars == 6


def test_the_forgiving_path_marks_token_counts_too() -> None:
    stream = StreamState()
    apply_event(
        b'{"choices": [{"delta": {"content": "xyz"}, "finish_reason": 5}], "usage": {"completion_tokens": 3}}',
        stream,
        1.0,
    )
    assert stream.token_marks == [(3, 3)]


def test_a_whole_completion_folds_like_one_chunk_with_its_tool_calls_indexed() -> None:
    from flashspark.client.chunks import apply_completion

    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    body = {
        "id": "cmpl-9",
        "choices": [
            {
                "message": {"content": "ok", "reasoning_content": "hm", "tool_calls": calls},
                "finish_reason": "tool_calls",
            },
            {"message": {"content": "second choice is ignored"}},
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 6},
    }
    stream = StreamState()
    apply_completion(json.dumps(body).encode(), stream, 0.25)
    result = stream.result(0.0, 0.3)
    assert result.ok and (result.content, result.reasoning, result.request_id) == ("ok", "hm", "cmpl-9")
    assert [c["function"]["name"] for c in result.tool_calls] == ["f", "g"]  # two calls, not one merged
    assert result.tool_calls[0]["function"]["arguments"] == '{"x": 1}'
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (4, 6, "tool_calls")
    assert result.ttft_s == 0.25 and stream.done


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b"<html>", "malformed", "not JSON: b'<html>'"),
        (b"[1]", "malformed", "unexpected answer: b'[1]'"),
        (b'{"error": {"message": "bad model"}}', "stream_error", "error in the stream: bad model"),
    ],
)
def test_a_whole_completion_that_is_not_one_fails_the_stream(body: bytes, kind: str, message: str) -> None:
    from flashspark.client.chunks import apply_completion

    stream = StreamState()
    apply_completion(body, stream, 0.1)
    assert (stream.error_kind, stream.error) == (kind, message)


def test_an_empty_or_odd_completion_carries_no_token() -> None:
    from flashspark.client.chunks import apply_completion

    stream = StreamState()
    apply_completion(b'{"choices": ["odd", {"message": {"content": ""}}]}', stream, 0.1)
    assert stream.ttft is None and stream.done and stream.error is None
