"""The long-decode gate: windows cut at exact token positions, the first bad window named, faults caught."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from flashspark.client import OpenAIClient
from flashspark.gates.longdecode import cut_windows, judge, run_longdecode
from flashspark.gates.prompts import WORDS
from tests.standin import Reply, StandIn, chunk, sse, usage

WINDOW = 64


def clean_tokens(count: int, seed: int = 1) -> list[str]:
    """Plain varied words, one per token, that no detector fires on."""
    rng = random.Random(seed)
    return [f"{rng.choice(WORDS)}{rng.randint(0, 999)} " for _ in range(count)]


def long_reply(tokens: list[str], *, per_chunk: int = 1, continuous: bool = True, finish: str = "length") -> Reply:
    """One chunk per `per_chunk` tokens, each with cumulative usage when `continuous` (as vLLM sends it)."""
    chunks = [(0.0, sse(chunk("", role="assistant")))]
    for at in range(0, len(tokens), per_chunk):
        body = chunk("".join(tokens[at : at + per_chunk]))
        if continuous:
            done = min(at + per_chunk, len(tokens))
            body["usage"] = {"prompt_tokens": 30, "completion_tokens": done, "total_tokens": 30 + done}
        chunks.append((0.0, sse(body)))
    chunks += [(0.0, sse(chunk(finish=finish))), (0.0, sse(usage(30, len(tokens)))), (0.0, sse("[DONE]"))]
    return Reply(chunks=chunks)


def garbled_after(good: int, total: int) -> list[str]:
    return clean_tokens(good) + ["<|im_start|>"] * (total - good)


async def gate(replies: list[Reply], tmp_path: Path, *, tokens: int = 512, concurrency: int = 1) -> Any:
    with StandIn() as server:
        server.queue(*replies)
        async with OpenAIClient(server.url) as client:
            report = await run_longdecode(
                client,
                tokens=tokens,
                concurrency=concurrency,
                window_tokens=WINDOW,
                evidence_path=tmp_path / "longdecode.jsonl",
            )
        return report, server.requests


@pytest.mark.parametrize(("good", "first_bad"), [(191, 2), (192, 3), (0, 0), (511, 7)])
async def test_a_reply_that_garbles_after_n_tokens_fails_at_the_window_where_it_starts(
    good: int, first_bad: int, tmp_path: Path
) -> None:
    report, _ = await gate([long_reply(garbled_after(good, 512))], tmp_path)
    stream = report.streams[0]
    assert not report.ok and not stream.ok
    assert stream.first_bad is not None and stream.first_bad.window.index == first_bad
    assert stream.first_bad.window.first_token == first_bad * WINDOW
    assert "special_token_leak" in {hit["detector"] for hit in stream.first_bad.hits}
    assert stream.bad_windows == 8 - first_bad and stream.windows == 8
    assert not stream.positions_estimated
    assert f"tokens {first_bad * WINDOW}-{(first_bad + 1) * WINDOW}" in report.summary


async def test_clean_long_replies_pass_and_every_stream_is_on_record(tmp_path: Path) -> None:
    replies = [long_reply(clean_tokens(512, seed=i), per_chunk=3) for i in range(3)]
    report, requests = await gate(replies, tmp_path, concurrency=3)
    assert report.ok, report.summary
    assert [s.completion_tokens for s in report.streams] == [512, 512, 512]
    assert all(s.windows == 8 and s.first_bad is None for s in report.streams)
    lines = [json.loads(line) for line in (tmp_path / "longdecode.jsonl").read_text().splitlines()]
    assert sorted(line["index"] for line in lines) == [0, 1, 2]
    assert all(len(line["content"]) > 512 * 3 for line in lines)
    # what was asked: the exact length, no early stop, cumulative usage in every chunk, distinct essays
    assert all(r["max_tokens"] == 512 and r["min_tokens"] == 512 for r in requests)
    assert all(r["stream_options"] == {"include_usage": True, "continuous_usage_stats": True} for r in requests)
    assert len({r["messages"][0]["content"] for r in requests}) == 3


async def test_a_reply_shorter_than_asked_or_failed_is_a_bad_stream(tmp_path: Path) -> None:
    report, _ = await gate([long_reply(clean_tokens(300), finish="stop"), Reply(status=503)], tmp_path, concurrency=2)
    problems = sorted(" ".join(s.problems) for s in report.streams)
    assert not report.ok
    assert "300 tokens, fewer than the 512 asked for (finish 'stop')" in problems[0]
    assert problems[1].startswith("http: HTTP 503")


async def test_without_cumulative_usage_the_windows_are_estimated_and_still_find_the_damage(tmp_path: Path) -> None:
    report, _ = await gate([long_reply(garbled_after(256, 512), continuous=False)], tmp_path)
    stream = report.streams[0]
    assert stream.positions_estimated and stream.first_bad is not None
    assert stream.first_bad.window.index in {3, 4}


def test_a_boundary_falls_at_the_first_chunk_that_reached_it() -> None:
    # chunks of 3 tokens (speculative decoding): 10 characters per chunk
    marks = [(10 * (i + 1), 3 * (i + 1)) for i in range(10)]
    windows, estimated = cut_windows(100, marks, 30, 8)
    assert not estimated
    assert [(w.first_token, w.end_token, w.start_char, w.end_char) for w in windows] == [
        (0, 8, 0, 30),  # token 8 arrives in the chunk that ends at 9 tokens, 30 characters
        (8, 16, 30, 60),  # 16 -> the chunk ending at 18 tokens
        (16, 24, 60, 80),  # 24 -> exactly the chunk ending at 24
        (24, 30, 80, 100),  # the last window ends at the text's end
    ]


def test_estimated_bounds_are_proportional_and_degenerate_input_has_no_windows() -> None:
    windows, estimated = cut_windows(1000, [], 100, 30)
    assert estimated
    assert [(w.start_char, w.end_char) for w in windows] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert cut_windows(50, [], 0, 30) == ([], True)
    assert cut_windows(50, [(50, 5)], 5, 0) == ([], False)


def test_bounds_never_run_backwards_when_marks_stop_short() -> None:
    windows, _ = cut_windows(40, [(40, 2)], 10, 4)
    assert [(w.start_char, w.end_char) for w in windows] == [(0, 40), (40, 40), (40, 40)]


def test_an_empty_reply_that_billed_tokens_is_bad() -> None:
    from flashspark.client import ChatResult

    result = ChatResult(ok=True, content="   ", completion_tokens=600, finish_reason="length")
    verdict = judge(0, result, tokens=512, window_tokens=WINDOW)
    assert not verdict.ok and verdict.problems == ["empty_with_tokens: 600 completion tokens, empty content"]


async def test_the_model_is_sent_at_temperature_zero_and_each_stream_is_reported_as_it_ends(tmp_path: Path) -> None:
    seen: list[Any] = []
    with StandIn() as server:
        replies = [long_reply(clean_tokens(64)), long_reply(clean_tokens(64, seed=2))]
        for reply in replies:  # a wall long enough to be measured to its third decimal
            reply.chunks[0] = (0.3, reply.chunks[0][1])
        server.queue(*replies)
        async with OpenAIClient(server.url) as client:
            report = await run_longdecode(
                client,
                model="served",
                tokens=64,
                concurrency=2,
                window_tokens=32,
                evidence_path=tmp_path / "deep" / "dir" / "longdecode.jsonl",
                on_stream=seen.append,
            )
        requests = server.requests
    assert all(r["model"] == "served" and r["temperature"] == 0.0 for r in requests)
    assert all(r["messages"][0]["role"] == "user" for r in requests)
    assert sorted(seen, key=lambda s: s.index) == report.streams and report.model == "served"
    assert report.wall_s > 0 and report.aggregate_tokens_per_s == pytest.approx(128 / report.wall_s, rel=0.01)
    for stream in report.streams:
        assert stream.finish_reason == "length" and stream.ttft_s is not None and stream.e2e_s is not None
        assert stream.error is None and stream.decode_tokens_per_s is not None
    line = json.loads((tmp_path / "deep" / "dir" / "longdecode.jsonl").read_text().splitlines()[0])
    assert line["first_bad"] is None and line["windows"] == 2


async def test_strict_cjk_fails_a_window_that_the_default_thresholds_let_pass(tmp_path: Path) -> None:
    tokens = clean_tokens(60) + ["漢字 "] * 2 + clean_tokens(2, seed=3)
    lenient, _ = await gate([long_reply(tokens)], tmp_path, tokens=64)
    assert lenient.ok
    with StandIn() as server:
        server.queue(long_reply(tokens))
        async with OpenAIClient(server.url) as client:
            strict = await run_longdecode(client, tokens=64, concurrency=1, window_tokens=WINDOW, strict_cjk=True)
    assert not strict.ok and strict.streams[0].first_bad is not None
    assert strict.streams[0].first_bad.hits == [
        {"detector": "cjk_drift", "detail": strict.streams[0].first_bad.hits[0]["detail"]}
    ]
    assert strict.streams[0].first_bad.sample == "".join(tokens)[:300]


def test_a_failed_request_keeps_its_error_and_counts_no_tokens() -> None:
    from flashspark.client import ChatResult

    result = ChatResult(ok=False, error="no data for 30 s", error_kind="stall", completion_tokens=None)
    verdict = judge(3, result, tokens=64, window_tokens=WINDOW)
    assert verdict.error == "no data for 30 s" and verdict.problems == ["stall: no data for 30 s"]
    assert verdict.windows == 0 and verdict.index == 3 and not verdict.ok
