"""The HTTP/1.1 layer under the client: framing however the bytes are cut, keep-alive, uvloop."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from flashspark.client import ChatRequest, OpenAIClient
from flashspark.client.wire import Connection, Origin, WireError, request_bytes
from tests.standin import Reply, StandIn, sse, stream_reply

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=8)


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


class Collect:
    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.ends: list[Exception | None] = []

    def on_head(self, status: int, headers: dict[str, str]) -> None:
        self.status = status

    def on_body(self, data: bytes, now_ns: int) -> None:
        self.body += data

    def on_end(self, error: Exception | None) -> None:
        self.ends.append(error)


def connection() -> tuple[Connection, FakeTransport, Collect]:
    conn, transport, handler = Connection(), FakeTransport(), Collect()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.send(b"GET / HTTP/1.1\r\n\r\n", handler)
    return conn, transport, handler


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


EVENTS = b"".join(sse({"n": n, "text": "x" * n}) for n in range(12))


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for size in sizes:
        piece = body[pos : pos + size]
        if piece:
            out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
        pos += size
    if pos < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:])
    return out + b"0\r\nX-Trailer: 1\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=30),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=25),
)
def test_a_chunked_response_reads_the_same_however_the_bytes_are_cut(sizes: list[int], points: list[int]) -> None:
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(EVENTS, sizes)
    conn, transport, handler = connection()
    for piece in cut(response, points):
        conn.data_received(piece)
    assert handler.status == 200 and handler.body == EVENTS
    assert handler.ends == [None]
    assert conn.reusable and not transport.aborted


@settings(max_examples=100, deadline=None)
@given(points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=25))
def test_a_content_length_response_ends_at_its_length(points: list[int]) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(EVENTS), EVENTS)
    conn, _, handler = connection()
    for piece in cut(response, points):
        conn.data_received(piece)
    assert handler.body == EVENTS and handler.ends == [None] and conn.reusable


def test_a_body_without_length_ends_when_the_server_closes() -> None:
    conn, _, handler = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ")
    conn.data_received(b"second")
    assert handler.ends == []
    conn.connection_lost(None)
    assert handler.body == b"first second" and handler.ends == [None] and not conn.reusable


def test_broken_chunk_framing_ends_the_response_with_an_error_and_drops_the_connection() -> None:
    conn, transport, handler = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")
    assert handler.body == b"hello"
    assert len(handler.ends) == 1 and isinstance(handler.ends[0], WireError)
    assert transport.aborted and not conn.reusable


def test_a_reset_mid_body_is_an_error_not_an_end() -> None:
    conn, _, handler = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    conn.connection_lost(ConnectionResetError("peer reset"))
    assert len(handler.ends) == 1 and isinstance(handler.ends[0], ConnectionResetError)


def test_connection_close_from_the_server_is_honoured() -> None:
    conn, _, handler = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    assert handler.ends == [None] and not conn.reusable


def test_the_request_bytes_carry_host_prefix_and_length() -> None:
    origin = Origin.from_url("http://example.org:8080/proxy")
    data = request_bytes("POST", origin, "/v1/chat/completions", {"Authorization": "Bearer k"}, b"{}")
    head, body = data.split(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /proxy/v1/chat/completions HTTP/1.1"
    assert b"Host: example.org:8080" in head and b"Content-Length: 2" in head and body == b"{}"
    assert Origin.from_url("https://h/").port == 443


# --- against a server ----------------------------------------------------------------------


async def test_keep_alive_connections_are_reused() -> None:
    with StandIn(keep_alive=True) as server:
        async with OpenAIClient(server.url) as client:
            results = [await client.stream_chat(REQUEST) for _ in range(5)]
        assert all(r.ok for r in results)
        assert server.connections == 1


async def test_a_connection_the_server_dropped_while_idle_is_replaced_without_sending_twice() -> None:
    with StandIn(keep_alive=True) as server:
        async with OpenAIClient(server.url) as client:
            first = await client.stream_chat(REQUEST)
            # Blocks this loop while the server closes: the client learns of it only when it reuses the socket.
            assert server.drop_idle_connections() == 1
            second = await client.stream_chat(REQUEST)
        assert first.ok and second.ok, second.error
        assert server.connections == 2
        assert len(server.requests) == 2  # the retried request reached the server once


async def test_a_chunk_of_unexpected_types_is_still_read() -> None:
    odd = {"id": 7, "choices": [{"delta": {"content": "a"}, "finish_reason": 3}], "usage": {"completion_tokens": "1"}}
    tail = sse({"choices": [], "usage": {"completion_tokens": 1}})
    reply = Reply(chunks=[(0, sse(odd)), (0, tail), (0, sse("[DONE]"))])
    with StandIn() as server:
        server.queue(reply)
        async with OpenAIClient(server.url) as client:
            result = await client.stream_chat(REQUEST)
    assert result.ok and result.content == "a" and result.completion_tokens == 1
    assert result.request_id is None  # 7 is not a request id


async def test_a_json_array_in_the_stream_is_malformed() -> None:
    with StandIn() as server:
        server.queue(Reply(chunks=[(0, sse([1, 2])), (0, sse("[DONE]"))]))
        async with OpenAIClient(server.url) as client:
            result = await client.stream_chat(REQUEST)
    assert not result.ok and result.error_kind == "malformed"


def test_the_client_streams_under_uvloop() -> None:
    # The CLI and the bench workers run on uvloop, whose transports are not asyncio classes.
    async def stream() -> tuple[bool, str, int | None]:
        async with OpenAIClient(server.url) as client:
            result = await client.stream_chat(REQUEST)
            models = await client.models()
        return result.ok, result.content, len(models)

    with StandIn(keep_alive=True) as server:
        server.queue(stream_reply([(0.0, "a"), (0.01, "b")], completion_tokens=2))
        assert uvloop.run(stream()) == (True, "ab", 1)


async def test_the_connection_cap_holds_under_load() -> None:
    with StandIn(keep_alive=True) as server:
        server.default = stream_reply([(0.05, "x")], completion_tokens=1)
        async with OpenAIClient(server.url, max_connections=3) as client:
            results = await asyncio.gather(*(client.stream_chat(REQUEST) for _ in range(12)))
    assert all(r.ok for r in results)
    assert server.connections == 3


@pytest.mark.parametrize("url", ["ftp://h/", "not a url"])
def test_a_base_url_that_is_not_http_is_refused_with_a_fix(url: str) -> None:
    from flashspark.errors import ClientError

    with pytest.raises(ClientError) as caught:
        OpenAIClient(url)
    assert caught.value.fix and "http://" in caught.value.fix


async def test_connections_opened_ahead_carry_the_burst_and_survive_an_idle_close() -> None:
    with StandIn(keep_alive=True) as server:
        async with OpenAIClient(server.url) as client:
            assert await client.open_connections(4) == 4
            for _ in range(100):  # the stand-in accepts on its own thread
                if server.connections == 4:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == 4
            burst = await asyncio.gather(*(client.stream_chat(REQUEST) for _ in range(4)))
            assert server.connections == 4  # no connection was opened inside the burst
            assert server.drop_idle_connections() == 4
            after = await asyncio.gather(*(client.stream_chat(REQUEST) for _ in range(4)))
    assert all(r.ok for r in burst + after), [r.error for r in burst + after]
    assert len(server.requests) == 8  # each chat request reached the server once
