"""`flashspark record`: a transparent recording proxy between an agent harness and an OpenAI-compatible server.

The harness talks to the proxy as it would to the server. Each request goes upstream on a kept-alive
connection (the client's own HTTP/1.1 layer); each piece of the answer is written to the harness in
the callback that read it off the upstream socket, before anything else is done with it, and the
time from that read to that write is the proxy's added latency, kept per chunk. Only then is the
piece folded into the exchange's reconstruction (content, reasoning, tool calls), so recording costs
the next chunk, never this one.

When an exchange ends it is judged (the garble detectors and the answer scoring) and appended to
exchanges.jsonl; a judged-bad one also to flagged.jsonl. Both hold the full request, secrets masked by
header name, by key name and by shape. record.json, rewritten as exchanges end and at the close, holds
the summary and the added latency over every chunk.

A listener beyond loopback needs a key: harnesses must present it as a bearer token, and it is
never forwarded (the upstream gets its own key, when there is one).
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import httptools
from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import OpenAIClient
from flashspark.client.chat import Exchange as ResponseWaiter
from flashspark.client.chunks import StreamState, apply_completion, apply_event
from flashspark.client.sse import SSEOverflow, SSEParser
from flashspark.errors import ClientError, InputError
from flashspark.files import append_line, write_json
from flashspark.gates.answer import score_answer
from flashspark.recipe.rules import is_loopback
from flashspark.redact import add_masks, redact_data, redact_headers, redact_values
from flashspark.traffic.exchange import Exchange, LatencyStats, recorded_body, request_secrets

RECORD_SCHEMA_VERSION = 1
MAX_REQUEST_BYTES = 256 * 1024 * 1024  # a 1M-token prompt is ~4 MB of JSON; this only stops a runaway
MAX_RECORDED_BODY = 8 * 1024 * 1024  # a non-SSE answer kept for reconstruction up to this
MAX_LATENCY_SAMPLES = 2_000_000  # per-chunk latencies kept for the summary (16 bytes each)
NS = 1e-9
# Not forwarded either way: they describe one connection, not the message (RFC 9110 7.6.1), and the
# proxy frames bodies itself; Accept-Encoding is dropped so the answer can be read to record it.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "accept-encoding",
    }
)


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    too_large: bool = False


class _Harness(asyncio.Protocol):
    """One connection from the harness: requests parsed as they arrive and answered in order."""

    def __init__(self, proxy: RecordingProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.current: _Relay | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        self.proxy.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(_plain(400, "the request is not HTTP/1.1"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        if self.current is not None:
            self.current.cancel("the harness closed the connection")
        self._queue.put_nowait(None)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= MAX_REQUEST_BYTES:
            self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("latin-1")
        request = _Request(
            method,
            self._url.decode("latin-1"),
            self._headers,
            b"".join(self._body),
            self._parser.should_keep_alive(),
            too_large=self._size > MAX_REQUEST_BYTES,
        )
        self._url, self._headers, self._body, self._size = b"", {}, [], 0
        self._queue.put_nowait(request)

    async def _serve(self) -> None:
        while (request := await self._queue.get()) is not None:
            try:
                await self.proxy.handle(request, self)
            except Exception as exc:  # a bug here must not leave the harness waiting for ever
                self.write(_plain(500, f"the recording proxy failed: {type(exc).__name__}"))
                self.close()
                raise
            if not request.keep_alive:
                self.close()
                return

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


def _plain(status: int, message: str) -> bytes:
    body = ('{"error": {"message": "' + message.replace('"', "'") + f'", "code": {status}}}}}').encode()
    head = f"HTTP/1.1 {status} {_phrase(status)}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


class _Relay(ResponseWaiter):
    """The upstream's answer to one request: written to the harness as it comes, then reconstructed."""

    def __init__(self, harness: _Harness, method: str, start_ns: int, latencies: list[int]) -> None:
        super().__init__()
        self.harness = harness
        self.method = method
        self.start_ns = start_ns
        self.latencies: list[int] = []
        self.all_latencies = latencies
        self.status: int | None = None
        self.sse = False
        self.bodyless = False
        self.head_sent = False
        self.stream = StreamState()
        self.parser = SSEParser()
        self.body = bytearray()
        self.pending: list[tuple[bytes, int]] = []
        self.size = 0
        self.ttfb: float | None = None
        self.cancelled: str | None = None
        self.finished = False

    def on_head(self, status: int, headers: dict[str, str]) -> None:
        super().on_head(status, headers)
        self.status = status
        self.stream.status = status
        self.sse = headers.get("content-type", "").startswith("text/event-stream")
        self.bodyless = self.method == "HEAD" or status in (204, 304)
        lines = [f"HTTP/1.1 {status} {_phrase(status)}"]
        lines += [f"{name}: {value}" for name, value in headers.items() if name not in HOP_BY_HOP]
        if not self.bodyless:
            lines.append("Transfer-Encoding: chunked")
        self.harness.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.head_sent = True

    def on_body(self, data: bytes, now_ns: int) -> None:
        super().on_body(data, now_ns)
        if self.harness.closed:
            self.cancel("the harness closed the connection")
            return
        if not self.bodyless:
            self.harness.write(b"%x\r\n%b\r\n" % (len(data), data))
            added = time.perf_counter_ns() - now_ns
            self.latencies.append(added)
            if len(self.all_latencies) < MAX_LATENCY_SAMPLES:
                self.all_latencies.append(added)
        # Folded into the record later in this turn of the event loop, after every chunk that arrived
        # with this one has been written: recording costs no chunk its latency, even in a burst.
        self.pending.append((data, now_ns))
        if len(self.pending) == 1:
            asyncio.get_running_loop().call_soon(self.digest)

    def digest(self) -> None:
        """Fold the chunks written since the last call into the reconstruction."""
        pending, self.pending = self.pending, []
        for data, now_ns in pending:
            now = (now_ns - self.start_ns) * NS
            self.size += len(data)
            if self.ttfb is None:
                self.ttfb = now
                self.stream.ttfb = now
            if (self.status is not None and self.status >= 400) or not self.sse:
                self.body += data[: MAX_RECORDED_BODY - len(self.body)]
                continue
            try:
                payloads = self.parser.feed_data(data)
            except SSEOverflow as overflow:
                self.stream.fail("malformed", str(overflow))
                continue
            for payload in payloads:
                apply_event(payload, self.stream, now)

    def on_end(self, error: Exception | None) -> None:
        self.finished = True
        if error is None and not self.bodyless:
            self.harness.write(b"0\r\n\r\n")
        elif error is not None and not self.stale():
            # The upstream broke mid-answer: so does the harness's answer, as it would have directly.
            self.harness.abort()
        super().on_end(error)

    def reset(self) -> None:
        super().reset()
        self.finished = False  # a stale kept-alive connection failed before any byte: the request is sent again

    def cancel(self, reason: str) -> None:
        """Stop relaying (the harness left): the upstream request is dropped, so the server stops work."""
        if self.cancelled is None and not self.finished:
            self.cancelled = reason
            if self.connection is not None:
                self.connection.abort()
            self.end()

    def finish(self) -> StreamState:
        """The reconstruction of the answer, once it ended."""
        self.digest()
        stream, now = self.stream, (time.perf_counter_ns() - self.start_ns) * NS
        if self.cancelled is not None:
            stream.fail("cancelled", self.cancelled)
        elif self.status is not None and self.status >= 400:
            stream.fail("http", f"HTTP {self.status}: {bytes(self.body[:300]).decode('utf-8', errors='replace')}")
        elif self.broken is not None:
            stream.fail("reset", f"the upstream connection broke: {self.broken}")
        elif self.sse:
            for payload in self.parser.close_data():
                apply_event(payload, stream, now)
        elif self.body:
            apply_completion(bytes(self.body), stream, now)
        return stream


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class RecordSummary(BaseModel):
    """record.json: what a recording holds and what the proxy cost."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = RECORD_SCHEMA_VERSION
    kind: str = "record"
    upstream: str
    listen: str
    started_at: str
    ended_at: str | None = None
    exchanges: int = 0
    chat_exchanges: int = 0
    flagged: int = 0
    errors: int = 0
    verdicts: dict[str, int] = Field(default_factory=dict)
    added_latency: LatencyStats | None = None


@dataclass
class RecordingProxy:
    """The proxy's state: its upstream client, where it writes, and what it has recorded."""

    client: OpenAIClient
    out_dir: Path
    key: str | None = None
    on_exchange: Callable[[Exchange], None] | None = None
    connections: set[_Harness] = field(default_factory=set)
    latencies: list[int] = field(default_factory=list)
    summary: RecordSummary | None = None
    _server: asyncio.AbstractServer | None = None
    _started_ns: int = 0

    async def start(self, host: str, port: int) -> str:
        """Listen on host:port (0: any free port); return the URL harnesses use."""
        add_masks([self.key])
        if not is_loopback(host) and not self.key:
            raise InputError(
                f"recording on {host} would let anyone on the network use the upstream through it",
                key="--listen",
                value=host,
                fix="listen on 127.0.0.1, or give a key that harnesses must present (--key-env NAME)",
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Harness(self), host, port)
        except OSError as exc:
            raise InputError(
                f"cannot listen on {host}:{port}: {exc.strerror}", key="--listen", fix="pick a free port"
            ) from None
        bound = self._server.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self._started_ns = time.perf_counter_ns()
        self.summary = RecordSummary(
            upstream=self.client.api,
            listen=f"{shown}:{bound}",
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._save()
        return f"http://{shown}:{bound}/v1"

    async def close(self) -> RecordSummary:
        """Stop listening, drop open harness connections, and write the final record.json."""
        if self._server is not None:
            self._server.close()
            for harness in list(self.connections):
                harness.abort()
            await self._server.wait_closed()
        assert self.summary is not None
        self.summary.ended_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._save()
        return self.summary

    async def handle(self, request: _Request, harness: _Harness) -> None:
        started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        start_ns = time.perf_counter_ns()
        if self.key is not None and not _presents(request.headers, self.key):
            harness.write(_plain(401, "this recording proxy needs its key as a bearer token"))
            return  # refused requests are not recorded: they never reached the upstream
        if request.too_large:
            harness.write(_plain(413, f"request body over {MAX_REQUEST_BYTES} bytes"))
            return
        relay = _Relay(harness, request.method, start_ns, self.latencies)
        harness.current = relay
        try:
            await self.client.relay(request.method, request.url, self._upstream_headers(request), request.body, relay)
        except (ClientError, OSError) as exc:
            relay.stream.fail("connect", f"cannot reach the upstream {self.client.root}: {exc}")
            if not relay.head_sent:
                harness.write(_plain(502, f"cannot reach the upstream: {exc}"))
        finally:
            harness.current = None
        self._record(request, relay, started_at, start_ns)

    def _upstream_headers(self, request: _Request) -> dict[str, str]:
        headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
        if self.key is not None or self.client.api_key:
            # The proxy's key stays here; the upstream gets its own, when it has one.
            headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
            if self.client.api_key:
                headers["Authorization"] = f"Bearer {self.client.api_key}"
        return headers

    def _record(self, request: _Request, relay: _Relay, started_at: str, start_ns: int) -> None:
        stream = relay.finish()
        result = stream.result(time.time(), (time.perf_counter_ns() - start_ns) * NS)
        exchange = Exchange(
            id=uuid.uuid4().hex[:12],
            started_at=started_at,
            offset_s=round((start_ns - self._started_ns) * NS, 4),
            method=request.method,
            path=request.url,
            request_headers=redact_headers(request.headers),
            request=recorded_body(request.body, 4096) if request.body else None,
            status=relay.status,
            stream=relay.sse,
            error=result.error,
            content=result.content,
            reasoning=result.reasoning,
            tool_calls=result.tool_calls,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttfb_s=_round(relay.ttfb),
            ttft_s=_round(result.ttft_s),
            e2e_s=_round(result.e2e_s),
            response_bytes=relay.size,
            added_latency=LatencyStats.of(relay.latencies),
        )
        if exchange.is_chat:
            messages = exchange.request.get("messages", []) if isinstance(exchange.request, dict) else []
            verdict, hits = score_answer(result, messages if isinstance(messages, list) else [])
            exchange.verdict = verdict
            exchange.flags = [{"detector": h.detector, "detail": h.detail} for h in hits]
        # The answer is judged as it came and written masked: shapes (an hf_ token, a bearer) anywhere,
        # and every secret the request showed, wherever the answer repeats it.
        record = exchange.model_dump(mode="json")
        for name in ("content", "reasoning", "tool_calls", "flags"):
            record[name] = redact_data(record[name], by_key=False)
        line = redact_values(json.dumps(record), request_secrets(request.headers, request.body))
        with open(self.out_dir / "exchanges.jsonl", "a", encoding="utf-8") as handle:
            append_line(handle, line)
        if exchange.flagged:
            with open(self.out_dir / "flagged.jsonl", "a", encoding="utf-8") as handle:
                append_line(handle, line)
        self._count(exchange)
        if self.on_exchange is not None:
            self.on_exchange(exchange)

    def _count(self, exchange: Exchange) -> None:
        summary = self.summary
        assert summary is not None
        summary.exchanges += 1
        summary.chat_exchanges += exchange.is_chat
        summary.flagged += exchange.flagged
        summary.errors += exchange.error is not None
        if exchange.verdict is not None:
            summary.verdicts[exchange.verdict] = summary.verdicts.get(exchange.verdict, 0) + 1
        self._save()

    def _save(self) -> None:
        assert self.summary is not None
        self.summary.added_latency = LatencyStats.of(self.latencies)
        write_json(self.out_dir / "record.json", self.summary.model_dump(mode="json"))


def _presents(headers: dict[str, str], key: str) -> bool:
    given = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


async def record(
    client: OpenAIClient,
    *,
    host: str,
    port: int,
    out_dir: Path,
    key: str | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[str], None] | None = None,
    on_exchange: Callable[[Exchange], None] | None = None,
) -> RecordSummary:
    """Run the proxy until `stop` is set or `duration_s` passes (or the task is cancelled); the
    summary is written whichever ends it."""
    proxy = RecordingProxy(client, out_dir, key=key, on_exchange=on_exchange)
    url = await proxy.start(host, port)
    if on_start is not None:
        on_start(url)
    try:
        async with asyncio.timeout(duration_s):
            await (stop or asyncio.Event()).wait()
    except TimeoutError:
        pass
    finally:
        summary = await asyncio.shield(proxy.close())
    return summary


__all__ = ["RecordSummary", "RecordingProxy", "record"]
