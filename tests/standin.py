"""A fault-injecting stand-in for an OpenAI-compatible server, for tests only.

It exists to produce what a real engine will not produce on demand: exact
chunk timings, multi-token chunks, resets mid-stream, stalls, 5xx answers,
malformed SSE and error objects. It never stands in for vLLM as proof that a
feature works; the real engine tests do that.

It speaks just enough HTTP/1.1 (chunked responses; keep-alive only when asked
for, and then it can drop its idle connections on demand) and runs on its own
thread and event loop, so sync and async tests can both use it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """One scripted answer to a chat request."""

    status: int = 200
    # (seconds to wait first, bytes to send) for each write.
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    # After the chunks: "end" finishes the response, "reset" drops the connection
    # without finishing it, "stall" keeps it open and silent for stall_s.
    then: str = "end"
    stall_s: float = 0.0
    content_type: str = "text/event-stream"


def sse(payload: Any) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def chunk(
    content: str | None = None, *, finish: str | None = None, reasoning: str | None = None, role: str | None = None
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning"] = reasoning
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "model": "standin",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "model": "standin",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def stream_reply(
    pieces: list[tuple[float, str]],
    *,
    completion_tokens: int,
    finish: str = "stop",
    prompt_tokens: int = 10,
    reasoning: list[tuple[float, str]] | None = None,
) -> Reply:
    """A well-formed stream: role chunk, optional reasoning, content pieces, finish, usage, [DONE]."""
    chunks = [(0.0, sse(chunk("", role="assistant")))]
    chunks += [(delay, sse(chunk(reasoning=text))) for delay, text in reasoning or []]
    for index, (delay, text) in enumerate(pieces):
        last = index == len(pieces) - 1
        chunks.append((delay, sse(chunk(text, finish=finish if last else None))))
    chunks += [(0.0, sse(usage(prompt_tokens, completion_tokens))), (0.0, sse("[DONE]"))]
    return Reply(chunks=chunks)


class StandIn:
    """`with StandIn() as server:` then `server.queue(Reply(...))`; `server.url` is the base URL."""

    def __init__(self, model: str = "standin", metrics: str = "", *, keep_alive: bool = False) -> None:
        self.model = model
        self.keep_alive = keep_alive
        self.connections = 0  # TCP connections accepted
        self._idle: set[asyncio.StreamWriter] = set()
        self.metrics = metrics
        self.replies: deque[Reply] = deque()
        self.listing: list[Any] | None = None  # GET /v1/models' data, when a test needs odd entries
        self.default = stream_reply([(0.0, "hello")], completion_tokens=1)
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []  # each chat request's headers, names lower-cased
        self.template_tokens = 5  # what POST /tokenize adds to the words of the messages
        self.tokenize_calls = 0
        self.tokenizes = True  # False: POST /tokenize is a 404, as on a server without it
        self.after_chat: Callable[[], None] | None = None  # called once each chat answer is sent
        self.in_flight = 0  # chat requests being answered now, and the most there ever were at once
        self.max_in_flight = 0
        # When set, decides the reply from the request body (before the queue is used).
        self.responder: Callable[[dict[str, Any]], Reply | None] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def __enter__(self) -> StandIn:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def drop_idle_connections(self) -> int:
        """Close every kept-alive connection that waits for a request, as a server's idle timeout does."""

        async def drop() -> int:
            idle = list(self._idle)
            for writer in idle:
                writer.transport.abort()
            self._idle.clear()
            await asyncio.sleep(0.05)
            return len(idle)

        return asyncio.run_coroutine_threadsafe(drop(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                self._idle.add(writer)
                head = await reader.readuntil(b"\r\n\r\n")
                self._idle.discard(writer)
                await self._answer(head, reader, writer)
                if not self.keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # a cancelled handler (the stand-in stopping) ends quietly, like a closed connection
        finally:
            self._idle.discard(writer)
            writer.close()

    async def _answer(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "POST" and path.endswith("/chat/completions"):
            request = json.loads(body)
            self.requests.append(request)
            self.request_headers.append(headers)
            reply = self.responder(request) if self.responder else None
            if reply is None:
                reply = self.replies.popleft() if self.replies else self.default
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await self._chat(writer, reply)
            finally:
                self.in_flight -= 1
                if self.after_chat is not None:
                    self.after_chat()
        elif method == "POST" and path == "/tokenize" and self.tokenizes:
            # One token per whitespace-separated word plus a template of TEMPLATE_TOKENS: a tokenizer whose
            # counts a test can work out by hand.
            request = json.loads(body)
            self.tokenize_calls += 1
            words = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
            answer = {"count": words + self.template_tokens, "max_model_len": 4096, "tokens": []}
            await self._plain(writer, 200, json.dumps(answer).encode(), "application/json")
        elif path == "/health":
            await self._plain(writer, 200, b"", "text/plain")
        elif path.endswith("/v1/models"):
            data = self.listing if self.listing is not None else [{"id": self.model, "max_model_len": 4096}]
            listing = {"object": "list", "data": data}
            await self._plain(writer, 200, json.dumps(listing).encode(), "application/json")
        elif path == "/metrics":
            await self._plain(writer, 200, self.metrics.encode(), "text/plain")
        else:
            await self._plain(writer, 404, b"not found", "text/plain")

    @property
    def _connection_header(self) -> str:
        return "" if self.keep_alive else "Connection: close\r\n"

    async def _plain(self, writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{self._connection_header}\r\n".encode()
            + body
        )
        await writer.drain()

    async def _chat(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.status != 200:
            await self._plain(writer, reply.status, b'{"error": {"message": "scripted failure"}}', "application/json")
            return
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {reply.content_type}\r\nTransfer-Encoding: chunked\r\n"
            f"{self._connection_header}\r\n".encode()
        )
        await writer.drain()
        for delay, data in reply.chunks:
            if delay:
                await asyncio.sleep(delay)
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        if reply.then == "reset":
            writer.transport.abort()
            return
        if reply.then == "stall":
            await asyncio.sleep(reply.stall_s)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
