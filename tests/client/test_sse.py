"""The SSE parser on recorded vLLM output and on the edge cases a network produces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashspark.client.sse import SSEEvent, SSEOverflow, SSEParser

RECORDED = (Path(__file__).parents[1] / "cases" / "vllm" / "chat_stream_echo_ngram.sse").read_bytes()


def parse_all(pieces: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events = [e for piece in pieces for e in parser.feed(piece)]
    return events + parser.close()


def test_recorded_vllm_stream_yields_every_chunk_and_done() -> None:
    events = parse_all([RECORDED])
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "NVFP4 DSPARK OK"
    # The final usage-only chunk has no choices and carries the token count.
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    # One chunk carried several tokens under speculative decoding.
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") == " DSPARK OK" for c in chunks)


@given(st.lists(st.integers(min_value=1, max_value=len(RECORDED) - 1), max_size=40))
def test_events_do_not_depend_on_how_the_bytes_are_cut(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [RECORDED[a:b] for a, b in zip([0, *points], [*points, len(RECORDED)], strict=True)]
    assert parse_all(pieces) == parse_all([RECORDED])


def test_comments_and_keepalives_are_ignored() -> None:
    stream = b': keep-alive\n\n: ping\ndata: {"a": 1}\n\n:\n\ndata: [DONE]\n\n'
    assert [e.data for e in parse_all([stream])] == ['{"a": 1}', "[DONE]"]


def test_crlf_and_cr_line_endings_split_across_chunks() -> None:
    pieces = [b"data: one\r", b"\n\r", b"\ndata: two\r\r", b"data: three\n\n"]
    assert [e.data for e in parse_all(pieces)] == ["one", "two", "three"]


def test_multiline_data_joins_with_newline_and_event_names_are_kept() -> None:
    stream = b"event: note\ndata: first\ndata: second\nid: 7\n\n"
    (event,) = parse_all([stream])
    assert event == SSEEvent(data="first\nsecond", event="note", id="7")


def test_a_final_event_without_blank_line_is_delivered_on_close() -> None:
    assert [e.data for e in parse_all([b"data: [DONE]"])] == ["[DONE]"]


def test_utf8_split_inside_a_character_survives() -> None:
    raw = 'data: {"c": "日本"}\n\n'.encode()
    middle = raw.index("本".encode()) + 1
    assert parse_all([raw[:middle], raw[middle:]])[0].data == '{"c": "日本"}'


def test_an_event_that_never_ends_is_refused_at_the_bound_not_buffered_forever() -> None:
    parser = SSEParser(max_event_bytes=1000)
    assert parser.feed(b"data: " + b"x" * 994) == []  # exactly 1000 bytes pending: still allowed
    with pytest.raises(SSEOverflow, match="1,000 bytes"):
        parser.feed(b"y")
    # A long stream of normal events is never near the bound, however it is cut.
    parser = SSEParser(max_event_bytes=1000)
    stream = b"".join(b"data: %d\n\n" % i for i in range(5000))
    events = [e.data for cut in range(0, len(stream), 7) for e in parser.feed(stream[cut : cut + 7])]
    assert events == [str(i) for i in range(5000)]
