"""The recording proxy: answers pass through as they come, every exchange is recorded and judged, secrets
never reach a file, and a listener beyond loopback lets in only those with its key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from flashspark.client import ChatRequest, OpenAIClient
from flashspark.errors import InputError
from flashspark.traffic import proxy as proxy_module
from flashspark.traffic.exchange import read_exchanges
from flashspark.traffic.proxy import RecordingProxy
from tests.gates.test_tools_gate import PARIS, text_stream, tool_stream
from tests.standin import Reply, StandIn, stream_reply

SECRET = "sk-planted-4f9a1c7e2b"
HF = "hf_" + "Q" * 30
UPSTREAM_KEY = "sk-upstream-8d3e5a1f"


@asynccontextmanager
async def recording(
    server: StandIn, out: Path, *, key: str | None = None, upstream_key: str | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[RecordingProxy, str]]:
    async with OpenAIClient(server.url, api_key=upstream_key) as upstream:
        proxy = RecordingProxy(upstream, out, key=key)
        url = await proxy.start(host, 0)
        try:
            yield proxy, url
        finally:
            await proxy.close()


async def raw(url: str, request: bytes) -> bytes:
    """One raw HTTP exchange with the proxy (the server closes after it, or after 5 s of silence)."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    writer.write(request)
    await writer.drain()
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
            data += chunk
        return data
    finally:
        writer.close()


def post(body: dict[str, Any], headers: str = "") -> bytes:
    data = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + headers.encode()
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(data), data)
    )


async def test_a_streamed_answer_passes_through_as_it_comes_and_is_recorded(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = stream_reply(
            [(0.0, "Lisbon "), (0.3, "is "), (0.3, "sunny.")], completion_tokens=3, prompt_tokens=12
        )
        async with recording(server, tmp_path) as (_, url), OpenAIClient(url) as harness:
            result = await harness.stream_chat(
                ChatRequest(model="standin", messages=[{"role": "user", "content": "Weather?"}])
            )
    assert result.ok and result.content == "Lisbon is sunny." and result.completion_tokens == 3
    # chunk by chunk: the first piece reached the harness while the upstream was still writing the rest
    assert result.chunk_times_s[-1] - result.chunk_times_s[0] >= 0.5
    [exchange] = read_exchanges(tmp_path / "exchanges.jsonl")
    assert exchange.is_chat and exchange.stream and exchange.status == 200
    assert (exchange.content, exchange.prompt_tokens, exchange.completion_tokens) == ("Lisbon is sunny.", 12, 3)
    assert exchange.finish_reason == "stop" and exchange.verdict == "healthy" and not exchange.flags
    assert exchange.request["messages"] == [{"role": "user", "content": "Weather?"}]
    assert exchange.added_latency is not None and exchange.added_latency.chunks >= 3
    assert exchange.ttft_s is not None and exchange.e2e_s is not None and exchange.e2e_s >= exchange.ttft_s + 0.5
    assert not (tmp_path / "flagged.jsonl").exists()
    summary = json.loads((tmp_path / "record.json").read_text())
    assert (summary["exchanges"], summary["chat_exchanges"], summary["flagged"]) == (1, 1, 0)
    assert summary["verdicts"] == {"healthy": 1} and summary["ended_at"] is not None


async def test_tool_calls_are_reconstructed_from_their_deltas(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = tool_stream([("get_weather", PARIS)])
        async with recording(server, tmp_path) as (_, url), OpenAIClient(url) as harness:
            result = await harness.stream_chat(
                ChatRequest(model="standin", messages=[{"role": "user", "content": "Paris?"}])
            )
    [exchange] = read_exchanges(tmp_path / "exchanges.jsonl")
    assert exchange.tool_calls == result.tool_calls
    assert exchange.tool_calls[0]["function"] == {"name": "get_weather", "arguments": PARIS}
    assert exchange.finish_reason == "tool_calls" and exchange.verdict == "healthy"


async def test_a_non_streamed_answer_is_passed_and_reconstructed(tmp_path: Path) -> None:
    body = {
        "id": "cmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3},
    }
    payload = json.dumps(body).encode()
    with StandIn() as server:
        server.default = Reply(chunks=[(0.0, payload)], content_type="application/json")
        async with recording(server, tmp_path) as (_, url):
            answer = await raw(url, post({"messages": [{"role": "user", "content": "hi"}], "stream": False}))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in answer
    assert payload in answer
    [exchange] = read_exchanges(tmp_path / "exchanges.jsonl")
    assert not exchange.stream and exchange.content == "Hi there." and exchange.completion_tokens == 3


@pytest.mark.parametrize(
    ("reply", "detector"),
    [
        (text_stream("Sure.<|im_end|> <|im_start|>user"), "special_token_leak"),
        (text_stream('Calling it. <tool_call>{"name": "get_weather"}</tool_call>'), "markup_leak"),
    ],
)
async def test_a_garbled_answer_is_flagged_with_the_full_request(tmp_path: Path, reply: Reply, detector: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    with StandIn() as server:
        server.default = reply
        async with recording(server, tmp_path) as (_, url), OpenAIClient(url) as harness:
            await harness.stream_chat(
                ChatRequest(model="standin", messages=messages, max_tokens=64, extra={"tools": []})
            )
    [flagged] = read_exchanges(tmp_path / "flagged.jsonl")
    assert flagged.verdict == "garbled" and detector in [f["detector"] for f in flagged.flags]
    assert flagged.request["messages"] == messages and flagged.request["max_tokens"] == 64
    assert flagged.request["tools"] == []
    assert json.loads((tmp_path / "record.json").read_text())["flagged"] == 1


async def test_no_planted_secret_reaches_any_file(tmp_path: Path) -> None:
    body = {
        "messages": [
            {"role": "system", "content": f"api_key={SECRET} and my token is {HF}"},
            {"role": "user", "content": f"Authorization: Bearer {SECRET}"},
        ],
        "api_key": SECRET,
        "stream": True,
    }
    headers = f"Authorization: Bearer {SECRET}\r\nX-Api-Key: {SECRET}\r\nCookie: session={SECRET}\r\n"
    with StandIn() as server:
        server.default = stream_reply([(0.0, f"echo {SECRET} {HF}")], completion_tokens=4)
        async with recording(server, tmp_path, upstream_key=UPSTREAM_KEY) as (_, url):
            answer = await raw(url, post(body, headers))
        seen = server.request_headers[0]
    assert SECRET.encode() in answer  # the harness gets the answer as it was: masking is for files only
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the upstream gets its own key
    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert {"exchanges.jsonl", "flagged.jsonl", "record.json"} >= set(written) >= {"exchanges.jsonl", "record.json"}
    for name, text in written.items():
        for planted in (SECRET, HF, UPSTREAM_KEY):
            assert planted not in text, f"{planted} in {name}"
    [exchange] = read_exchanges(tmp_path / "exchanges.jsonl")
    assert exchange.request_headers["Authorization"] == "***" and exchange.request_headers["X-Api-Key"] == "***"
    assert exchange.request_headers["Cookie"] == "***" and exchange.request["api_key"] == "***"


async def test_beyond_loopback_the_proxy_needs_a_key(tmp_path: Path) -> None:
    with StandIn() as server:
        async with OpenAIClient(server.url) as upstream:
            with pytest.raises(InputError) as caught:
                await RecordingProxy(upstream, tmp_path).start("0.0.0.0", 0)
    assert caught.value.key == "--listen" and "--key-env" in (caught.value.fix or "")


async def test_with_a_key_a_request_without_it_is_refused_and_never_forwarded(tmp_path: Path) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with StandIn() as server:
        async with recording(server, tmp_path, key="proxy-key-5c2e", host="0.0.0.0") as (_, url):
            url = url.replace("0.0.0.0", "127.0.0.1")
            refused = await raw(url, post(body))
            wrong = await raw(url, post(body, "Authorization: Bearer proxy-key-5c2X\r\n"))
            assert server.requests == []
            allowed = await raw(url, post(body, "Authorization: Bearer proxy-key-5c2e\r\n"))
        seen = server.request_headers
    assert refused.startswith(b"HTTP/1.1 401") and wrong.startswith(b"HTTP/1.1 401")
    assert allowed.startswith(b"HTTP/1.1 200") and len(seen) == 1
    assert "authorization" not in seen[0]  # the proxy's key is not forwarded (this upstream has none)
    assert "proxy-key-5c2e" not in "".join(p.read_text() for p in tmp_path.iterdir())


async def test_an_unreachable_upstream_is_a_502_and_recorded(tmp_path: Path) -> None:
    with StandIn() as server:
        dead = server.url
    async with OpenAIClient(dead) as upstream:
        proxy = RecordingProxy(upstream, tmp_path)
        url = await proxy.start("127.0.0.1", 0)
        answer = await raw(url, post({"messages": [{"role": "user", "content": "hi"}]}))
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway") and b"cannot reach the upstream" in answer
    [exchange] = read_exchanges(tmp_path / "exchanges.jsonl")
    assert exchange.verdict == "error" and "cannot reach the upstream" in (exchange.error or "")


async def test_an_upstream_that_breaks_mid_answer_breaks_the_harness_answer_too(tmp_path: Path) -> None:
    with StandIn() as server:
        broken = stream_reply([(0.0, "half an ans")], completion_tokens=3)
        broken.chunks = broken.chunks[:2]
        broken.then = "reset"
        server.default = broken
        async with recording(server, tmp_path) as (_, url), OpenAIClient(url) as harness:
            result = await harness.stream_chat(
                ChatRequest(model="standin", messages=[{"role": "user", "content": "hi"}])
            )
    assert not result.ok and result.error_kind == "reset" and result.content == "half an ans"
    [exchange] = read_exchanges(tmp_path / "exchanges.jsonl")
    assert exchange.content == "half an ans" and "broke" in (exchange.error or "")


async def test_a_harness_that_leaves_mid_answer_stops_the_upstream_request(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = stream_reply([(0.05, f"w{i} ") for i in range(200)], completion_tokens=200)
        async with recording(server, tmp_path) as (_, url):
            host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(post({"messages": [{"role": "user", "content": "hi"}]}))
            await reader.readuntil(b"w2 ")
            writer.close()
            for _ in range(100):  # the upstream connection is dropped within a chunk or two
                await asyncio.sleep(0.05)
                if server.in_flight == 0:
                    break
            assert server.in_flight == 0
            await asyncio.sleep(0.1)
    [exchange] = read_exchanges(tmp_path / "exchanges.jsonl")
    assert exchange.error == "the harness closed the connection"
    assert exchange.content.startswith("w0 w1 w2") and len(exchange.content.split()) < 50


async def test_requests_on_one_kept_alive_connection_are_answered_in_order(tmp_path: Path) -> None:
    first = json.dumps({"messages": [{"role": "user", "content": "one"}]}).encode()
    second = json.dumps({"messages": [{"role": "user", "content": "two"}]}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    with StandIn() as server:
        server.queue(text_stream("First."), text_stream("Second."))
        async with recording(server, tmp_path) as (_, url):
            host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(head % len(first) + first + head % len(second) + second)  # pipelined
            data = b""
            while data.count(b"0\r\n\r\n") < 2:
                data += await asyncio.wait_for(reader.read(65536), 5)
            writer.close()
    assert data.index(b"First.") < data.index(b"Second.")
    assert [e.content for e in read_exchanges(tmp_path / "exchanges.jsonl")] == ["First.", "Second."]


async def test_broken_http_is_a_400_and_a_body_over_the_limit_a_413(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy_module, "MAX_REQUEST_BYTES", 100)
    with StandIn() as server:
        async with recording(server, tmp_path) as (_, url):
            broken = await raw(url, b"NOT HTTP AT ALL\r\n\r\n")
            large = await raw(url, post({"messages": [{"role": "user", "content": "x" * 200}]}))
        assert server.requests == []
    assert broken.startswith(b"HTTP/1.1 400") and large.startswith(b"HTTP/1.1 413")


async def test_hop_by_hop_headers_stop_at_the_proxy_both_ways(tmp_path: Path) -> None:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy.example\r\nConnection: close\r\n"
        b"Accept-Encoding: gzip\r\nTE: trailers\r\nUpgrade: h2c\r\nKeep-Alive: 5\r\nX-Team: research\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    with StandIn() as server:
        server.default = text_stream("fine.")
        async with recording(server, tmp_path) as (_, url):
            answer = await raw(url, request)
        seen = server.request_headers[0]
    assert seen["x-team"] == "research" and seen["content-type"] == "application/json"
    assert seen["host"] != "proxy.example" and seen["content-length"] == "2"
    for name in ("accept-encoding", "te", "upgrade", "keep-alive"):
        assert name not in seen, name
    head = answer.split(b"\r\n\r\n")[0].decode().lower().splitlines()
    assert head[0] == "http/1.1 200 ok" and "transfer-encoding: chunked" in head
    assert "content-type: text/event-stream" in head and not any(h.startswith("connection:") for h in head)
    assert sum(h.startswith("transfer-encoding") for h in head) == 1


async def test_a_recorded_exchange_keeps_its_timing_size_and_place(tmp_path: Path) -> None:
    with StandIn() as server:
        server.queue(Reply(status=503), text_stream("Second."))
        async with recording(server, tmp_path) as (proxy, url), OpenAIClient(url) as harness:
            failed = await harness.stream_chat(
                ChatRequest(model="standin", messages=[{"role": "user", "content": "a"}])
            )
            await asyncio.sleep(0.2)
            good = await harness.stream_chat(ChatRequest(model="standin", messages=[{"role": "user", "content": "b"}]))
            summary = proxy.summary
    assert not failed.ok and good.ok and summary is not None
    first, second = read_exchanges(tmp_path / "exchanges.jsonl")
    assert first.status == 503 and first.verdict == "error" and (first.error or "").startswith("HTTP 503: ")
    assert not first.stream and first.response_bytes > 0 and first.added_latency is not None
    assert second.status == 200 and second.stream and second.content == "Second." and second.error is None
    assert second.offset_s >= first.offset_s + 0.2 and second.ttfb_s is not None and second.ttfb_s <= second.e2e_s
    assert second.started_at > first.started_at and len({first.id, second.id}) == 2 and len(first.id) == 12
    assert first.request_headers["Content-Type"] == "application/json" and first.method == "POST"
    assert (summary.exchanges, summary.chat_exchanges, summary.errors, summary.flagged) == (2, 2, 1, 0)
    assert summary.verdicts == {"error": 1, "healthy": 1}
    assert summary.listen.startswith("127.0.0.1:") and summary.upstream == f"{server.url}/v1"


async def test_a_port_in_use_is_an_input_error_naming_the_flag(tmp_path: Path) -> None:
    with StandIn() as server:
        async with OpenAIClient(server.url) as upstream:
            with pytest.raises(InputError) as caught:
                await RecordingProxy(upstream, tmp_path).start("127.0.0.1", server.port)
    assert caught.value.key == "--listen" and caught.value.message.startswith(
        f"cannot listen on 127.0.0.1:{server.port}"
    )
    assert caught.value.fix == "pick a free port"
