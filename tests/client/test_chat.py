"""The streaming client against a fault-injecting stand-in: timings, token counts, failures recorded."""

from __future__ import annotations

import pytest

from flashspark.client import ChatRequest, OpenAIClient, Timeouts
from flashspark.errors import ClientError
from tests.standin import Reply, StandIn, chunk, sse, stream_reply, usage

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=32)


@pytest.fixture
def server():
    with StandIn() as standin:
        yield standin


async def run(server: StandIn, reply: Reply, **timeouts: float):
    server.queue(reply)
    async with OpenAIClient(server.url, timeouts=Timeouts(**timeouts) if timeouts else None) as client:
        return await client.stream_chat(REQUEST)


async def test_multi_token_chunks_give_per_token_rate_ttft_and_ttfo(server: StandIn) -> None:
    # 10 tokens: reasoning first (0.2 s), then content in chunks of 1, 3, 3, 3 tokens 0.1 s apart.
    reply = stream_reply(
        [(0.2, "A"), (0.1, "BBB"), (0.1, "CCC"), (0.1, "DDD")], completion_tokens=10, reasoning=[(0.2, "think")]
    )
    result = await run(server, reply)
    assert result.ok and result.content == "ABBBCCCDDD" and result.reasoning == "think"
    assert result.completion_tokens == 10
    assert result.ttft_s == pytest.approx(0.2, abs=0.08)
    assert result.ttfo_s == pytest.approx(0.4, abs=0.08)
    assert result.last_token_s == pytest.approx(0.7, abs=0.1)
    # (N - 1) / (t_last - t_first): 9 tokens over ~0.5 s, not 4 chunks over it.
    assert result.decode_tokens_per_s == pytest.approx(9 / (result.last_token_s - result.ttft_s))
    assert result.decode_tokens_per_s > 12
    assert len(result.chunk_times_s) == 5


async def test_request_body_asks_for_usage_and_streaming(server: StandIn) -> None:
    await run(server, stream_reply([(0, "x")], completion_tokens=1))
    body = server.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "standin" and body["max_tokens"] == 32


async def test_http_5xx_is_a_failed_request(server: StandIn) -> None:
    result = await run(server, Reply(status=503))
    assert not result.ok and result.error_kind == "http" and result.status_code == 503


async def test_reset_mid_stream_is_a_failed_request(server: StandIn) -> None:
    reply = Reply(chunks=[(0, sse(chunk("", role="assistant"))), (0, sse(chunk("partial")))], then="reset")
    result = await run(server, reply)
    assert not result.ok and result.error_kind == "reset"
    assert result.content == "partial"


async def test_stall_past_the_budget_is_a_failed_request(server: StandIn) -> None:
    reply = Reply(chunks=[(0, sse(chunk("a")))], then="stall", stall_s=3)
    result = await run(server, reply, stall_s=0.5)
    assert not result.ok and result.error_kind == "stall"


async def test_total_budget_is_enforced(server: StandIn) -> None:
    reply = Reply(chunks=[(0.3, sse(chunk("a"))) for _ in range(10)])
    result = await run(server, reply, total_s=0.8)
    assert not result.ok and result.error_kind == "timeout"


async def test_malformed_sse_is_a_failed_request(server: StandIn) -> None:
    reply = Reply(chunks=[(0, b"data: {not json\n\n"), (0, sse("[DONE]"))])
    result = await run(server, reply)
    assert not result.ok and result.error_kind == "malformed"


async def test_error_object_inside_the_stream_is_a_failed_request(server: StandIn) -> None:
    reply = Reply(chunks=[(0, sse(chunk("a"))), (0, sse({"error": {"message": "engine dead"}})), (0, sse("[DONE]"))])
    result = await run(server, reply)
    assert not result.ok and result.error_kind == "stream_error" and "engine dead" in (result.error or "")


async def test_stream_without_done_is_a_failed_request(server: StandIn) -> None:
    reply = Reply(chunks=[(0, sse(chunk("a", finish="stop"))), (0, sse(usage(1, 1)))])
    result = await run(server, reply)
    assert not result.ok and result.error_kind == "reset"


async def test_unreachable_server_is_a_failed_request() -> None:
    async with OpenAIClient("http://127.0.0.1:9/v1", timeouts=Timeouts(connect_s=1)) as client:
        result = await client.stream_chat(REQUEST.model_copy(update={"model": "m"}))
    assert not result.ok and result.error_kind == "connect"


async def test_models_skips_entries_that_are_not_models() -> None:
    with StandIn() as server:
        server.listing = [
            {"object": "model"},
            "junk",
            {"id": 7},
            {"id": "real", "max_model_len": 2048, "owned_by": "x"},
        ]
        async with OpenAIClient(server.url) as client:
            listed = await client.models()
            first = await client.default_model()
    assert [(m.id, m.max_model_len) for m in listed] == [("real", 2048)]
    assert first == "real"


async def test_a_server_listing_no_usable_model_is_a_client_error() -> None:
    with StandIn() as server:
        server.listing = [{"object": "model"}]
        async with OpenAIClient(server.url) as client:
            with pytest.raises(ClientError, match="lists no models"):
                await client.default_model()


async def test_an_event_that_never_ends_fails_the_request_at_the_bound(server: StandIn) -> None:
    from flashspark.client.sse import MAX_EVENT_BYTES

    endless = [(0.0, b"data: " + b"x" * 65536) for _ in range(MAX_EVENT_BYTES // 65536 + 2)]
    server.queue(Reply(chunks=endless, then="stall", stall_s=30))
    async with OpenAIClient(server.url) as client:
        result = await client.stream_chat(REQUEST)
    # "malformed" at the bound, not "stall" after the server's 30 s of silence.
    assert not result.ok and result.error_kind == "malformed" and "without ending" in (result.error or "")


async def test_ttft_is_the_first_token_not_the_role_chunk_that_arrives_long_before_it(server: StandIn) -> None:
    # vLLM-like servers may send the role chunk at once; the first token comes after prefill (0.5 s).
    reply = stream_reply([(0.5, "A"), (0.1, "B")], completion_tokens=2)
    result = await run(server, reply)
    assert result.ok and result.content == "AB"
    assert result.ttfb_s is not None and result.ttfb_s < 0.25  # the body began with the role chunk
    assert result.ttft_s is not None and result.ttft_s >= 0.45  # the first token, not that chunk
    assert result.ttfo_s == result.ttft_s
    assert result.decode_tokens_per_s == pytest.approx(1 / (result.last_token_s - result.ttft_s))
