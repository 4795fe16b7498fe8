"""A streaming OpenAI-compatible chat client that records what happened, never crashes a caller.

`OpenAIClient.stream_chat` returns a `ChatResult` for every request: the text,
the reasoning, the usage, the finish reason and per-request timing (first
byte, first token of any kind, first answer token, last token, every chunk).
A reset, a stall past the budget, an HTTP error, an error object inside the
stream or malformed SSE all come back as a result with `error` set, so gates
and benchmarks finish and report instead of dying on one bad request.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flashspark._version import __version__
from flashspark.client.sse import SSEParser
from flashspark.client.wire import Connection, ConnectionPool, Origin, WireError, request_bytes
from flashspark.errors import ClientError, HTTPStatusError

NS = 1e-9


class ChatRequest(BaseModel):
    """One chat completion request; `extra` is merged into the JSON body as is."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def body(self, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model or model,
            "messages": self.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for key in ("max_tokens", "temperature", "top_p", "seed", "stop"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        body.update(self.extra)
        return body


class ModelEntry(BaseModel):
    """One entry of GET /v1/models: the id and the context the server serves (anything else it says is kept)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    max_model_len: int | None = None


class Timeouts(BaseModel):
    """Budgets in seconds: connect, first byte, the longest gap between chunks, the whole request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_s: float = 10.0
    first_byte_s: float = 600.0
    stall_s: float = 120.0
    total_s: float = 1800.0


class ChatResult(BaseModel):
    """What one request produced and when. Times are seconds from the request's start."""

    model_config = ConfigDict(extra="forbid")

    ok: bool = False
    error: str | None = None
    error_kind: str | None = Field(
        default=None,
        description="connect | timeout | stall | http | stream_error | malformed | reset | empty",
    )
    status_code: int | None = None
    request_id: str | None = None
    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    started_at: float = Field(default=0.0, description="Unix time the request was sent.")
    ttfb_s: float | None = Field(default=None, description="First byte of the response body.")
    ttft_s: float | None = Field(default=None, description="First token of any kind.")
    ttfo_s: float | None = Field(default=None, description="First answer (content) token.")
    last_token_s: float | None = None
    e2e_s: float | None = None
    chunk_times_s: list[float] = Field(
        default_factory=list, description="Arrival time of every chunk that carried a token."
    )

    @property
    def decode_tokens_per_s(self) -> float | None:
        """(N - 1) / (t_last - t_first): per-token, not per-chunk, so multi-token chunks count right."""
        n = self.completion_tokens
        if n is None or n < 2 or self.ttft_s is None or self.last_token_s is None:
            return None
        span = self.last_token_s - self.ttft_s
        return (n - 1) / span if span > 0 else None


def normalize_base_url(url: str) -> tuple[str, str]:
    """(server root, OpenAI API base) from either form: http://h:p or http://h:p/v1."""
    url = url.rstrip("/")
    if url.endswith("/v1"):
        return url[: -len("/v1")], url
    return url, url + "/v1"


@dataclass
class _Stream:
    """What a stream has produced so far: plain attributes, because it is updated per chunk."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)
    request_id: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttfb: float | None = None
    ttft: float | None = None
    ttfo: float | None = None
    last: float | None = None
    status: int | None = None
    error: str | None = None
    error_kind: str | None = None
    done: bool = False

    def fail(self, kind: str, message: str) -> None:
        if self.error is None:
            self.error_kind, self.error = kind, message

    def result(self, started_at: float, e2e: float) -> ChatResult:
        return ChatResult(
            ok=self.error is None,
            error=self.error,
            error_kind=self.error_kind,
            status_code=self.status,
            request_id=self.request_id,
            content="".join(self.content),
            reasoning="".join(self.reasoning),
            tool_calls=self.tool_calls,
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            started_at=started_at,
            ttfb_s=self.ttfb,
            ttft_s=self.ttft,
            ttfo_s=self.ttfo,
            last_token_s=self.last,
            e2e_s=e2e,
            chunk_times_s=self.chunk_times,
        )


class OpenAIClient:
    """Async client for one OpenAI-compatible server (vLLM first, any other second).

    It speaks HTTP/1.1 itself (`client/wire.py`): a streamed answer is parsed
    inside the socket's read callback and timed there, so neither a library's
    request path nor the event loop's queue is measured as server latency.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 256,
    ) -> None:
        self.root, self.api = normalize_base_url(base_url)
        self.api_key = api_key
        self.timeouts = timeouts or Timeouts()
        try:
            self._origin = Origin.from_url(self.root)
        except ValueError as exc:
            raise ClientError(str(exc), key="base_url", value=base_url, fix="use http://HOST:PORT[/v1]") from None
        self._api_path = self.api[len(self.root) :]
        self._headers = {"User-Agent": f"flashspark/{__version__}", "Accept": "application/json, text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._model: str | None = None
        self._model_lock = asyncio.Lock()

    @property
    def pool(self) -> ConnectionPool:
        # Created lazily, inside the running event loop that will use it.
        if self._pool is None:
            self._pool = ConnectionPool(
                self._origin, limit=self._max_connections, connect_timeout_s=self.timeouts.connect_s
            )
        return self._pool

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def open_connections(self, count: int) -> int:
        """Open idle keep-alive connections up to `count` (and the pool's cap) ahead of a burst.

        Returns how many are open and idle. A server closes idle ones after its
        keep-alive timeout (uvicorn's default: 5 s); such a connection is then
        replaced when it is next used.
        """
        try:
            return await self.pool.prewarm(count)
        except OSError as exc:  # refused, unreachable or timed out
            raise ClientError(
                f"cannot connect to {self.root}: {exc}", where=self.root, fix="check that the server is up"
            ) from exc

    # --- plain endpoints -------------------------------------------------------------

    async def _get(self, url: str) -> tuple[int, bytes]:
        path = url[len(self.root) :] if url.startswith(self.root) else url
        collected = _Collect(self.timeouts.connect_s + self.timeouts.stall_s)
        data = request_bytes("GET", self._origin, path, self._headers)
        try:
            await self._exchange(data, collected)
        except (OSError, WireError) as exc:  # TimeoutError is an OSError
            raise ClientError(
                f"GET {url} failed: {exc or type(exc).__name__}",
                where=url,
                fix="check that the server is up and the base URL is right",
            ) from exc
        return collected.status, b"".join(collected.body)

    async def _get_json(self, url: str) -> Any:
        status, body = await self._get(url)
        if status >= 400:
            raise HTTPStatusError(
                f"GET {url} answered {status}", status_code=status, body=body[:300].decode(errors="replace")
            )
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ClientError(f"GET {url} did not return JSON", where=url) from exc

    async def health(self) -> int:
        """HTTP status of GET /health (vLLM: 200 alive, 503 engine dead)."""
        status, _ = await self._get(f"{self.root}/health")
        return status

    async def models(self) -> list[ModelEntry]:
        """The entries of GET /v1/models (an entry without a string id is not a model: skipped)."""
        document = await self._get_json(f"{self.api}/models")
        data = document.get("data", []) if isinstance(document, dict) else []
        entries = []
        for item in data if isinstance(data, list) else []:
            try:
                entries.append(ModelEntry.model_validate(item))
            except ValidationError:
                continue
        return entries

    async def default_model(self) -> str:
        """The first model the server lists, cached: what `--model` defaults to."""
        async with self._model_lock:  # one GET for a burst of first requests, not one each
            if self._model is None:
                self._model = await self._first_model()
        return self._model

    async def _first_model(self) -> str:
        listed = await self.models()
        if not listed:
            raise ClientError(
                f"{self.api}/models lists no models", where=self.api, fix="pass --model, or check the server"
            )
        return listed[0].id

    async def metrics_text(self) -> str:
        status, body = await self._get(f"{self.root}/metrics")
        if status >= 400:
            raise HTTPStatusError(f"GET /metrics answered {status}", status_code=status)
        return body.decode("utf-8", errors="replace")

    async def version(self) -> str | None:
        try:
            status, body = await self._get(f"{self.root}/version")
            value = json.loads(body).get("version") if status == 200 else None
        except (ClientError, ValueError):
            return None
        return str(value) if value is not None else None

    # --- streaming chat --------------------------------------------------------------

    async def stream_chat(self, request: ChatRequest) -> ChatResult:
        """Send one streaming chat request; every failure is recorded in the result."""
        started_at = time.time()
        start = time.perf_counter_ns()
        stream = _Stream()
        try:
            model = request.model or await self.default_model()
            body = json.dumps(request.body(model), separators=(",", ":")).encode()
            data = request_bytes(
                "POST",
                self._origin,
                f"{self._api_path}/chat/completions",
                self._headers | {"Content-Type": "application/json"},
                body,
            )
            handler = _ChatStream(stream, start, self.timeouts)
            async with asyncio.timeout(self.timeouts.total_s):
                await self._exchange(data, handler)
        except ClientError as exc:
            stream.fail("connect", exc.message)
        except TimeoutError:
            if stream.error is None:
                stream.fail("timeout", f"request exceeded its total budget of {self.timeouts.total_s:g} s")
        except OSError as exc:
            stream.fail("connect", f"cannot connect to {self.api}: {exc}")
        return stream.result(started_at, (time.perf_counter_ns() - start) * NS)

    async def _exchange(self, data: bytes, handler: _Exchange) -> None:
        """Send one request on a pooled connection and wait for its response to end.

        A kept-alive connection the server closed while it sat idle fails
        before any byte comes back; that request is sent once more on a new
        connection (nothing of it reached the server's application).
        """
        pool = self.pool
        connection = await pool.acquire()
        try:
            for attempt in (1, 2):
                handler.begin(connection)
                connection.send(data, handler)
                await handler.ended()
                if attempt == 1 and handler.stale():
                    connection.abort()
                    handler.reset()
                    connection = await pool.open_fresh()
                    continue
                return
        except BaseException:
            connection.abort()  # cancelled or timed out mid-response: the connection is not reusable
            raise
        finally:
            handler.stop()
            pool.release(connection)


class _Exchange:
    """A response handler that a coroutine can wait on; `wire.Connection` calls it from its callbacks."""

    def __init__(self) -> None:
        self._done: asyncio.Future[None] | None = None
        self.connection: Connection | None = None
        self.reused = False
        self.got_bytes = False
        self.broken: Exception | None = None

    def begin(self, connection: Connection) -> None:
        self.connection = connection
        self.reused = connection.from_pool
        self._done = asyncio.get_running_loop().create_future()

    async def ended(self) -> None:
        assert self._done is not None
        await self._done

    def stale(self) -> bool:
        """A kept-alive connection broke before the response's first byte: worth one more try."""
        return self.broken is not None and self.reused and not self.got_bytes

    def reset(self) -> None:
        self.broken = None

    def stop(self) -> None:
        """Release what the exchange holds beyond the response (timers)."""

    def end(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def on_head(self, status: int, headers: dict[str, str]) -> None:
        self.got_bytes = True

    def on_body(self, data: bytes, now_ns: int) -> None:
        self.got_bytes = True

    def on_end(self, error: Exception | None) -> None:
        self.broken = error
        self.end()


class _Collect(_Exchange):
    """A whole small response (GET /health, /v1/models, /metrics), in a time budget."""

    def __init__(self, budget_s: float) -> None:
        super().__init__()
        self.budget_s = budget_s
        self.status = 0
        self.body: list[bytes] = []

    async def ended(self) -> None:
        async with asyncio.timeout(self.budget_s):
            await super().ended()
        if self.broken is not None and not self.stale():
            raise self.broken if isinstance(self.broken, OSError | WireError) else OSError(str(self.broken))

    def on_head(self, status: int, headers: dict[str, str]) -> None:
        super().on_head(status, headers)
        self.status = status

    def on_body(self, data: bytes, now_ns: int) -> None:
        super().on_body(data, now_ns)
        self.body.append(data)


class _ChatStream(_Exchange):
    """Folds a streamed chat answer into `_Stream` as its bytes arrive, timed at their arrival.

    The first-byte and stall budgets are one timer per budget period, not a
    timeout per read: at 100k chunks a second per-read timers cost more than
    parsing the chunks. A stall is therefore noticed between one and two
    budgets after the last data.
    """

    ERROR_BODY_BYTES = 4096

    def __init__(self, stream: _Stream, start_ns: int, timeouts: Timeouts) -> None:
        super().__init__()
        self.stream = stream
        self.start_ns = start_ns
        self.timeouts = timeouts
        self.parser = SSEParser()
        self.failed_status = False
        self.error_body = bytearray()
        self.fed = False
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, connection: Connection) -> None:
        super().begin(connection)
        self._arm(self.timeouts.first_byte_s)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, delay: float) -> None:
        self.stop()
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        if self.fed:
            self.fed = False
            self._arm(self.timeouts.stall_s)
            return
        if self.stream.ttfb is None:
            self.stream.fail("timeout", f"no first byte within {self.timeouts.first_byte_s:g} s")
        else:
            self.stream.fail("stall", f"no data for {self.timeouts.stall_s:g} s")
        self._give_up()

    def _give_up(self) -> None:
        """Stop reading: the answer is already judged (failed), the connection cannot be reused."""
        self.stop()
        if self.connection is not None:
            self.connection.abort()
        self.end()

    def on_head(self, status: int, headers: dict[str, str]) -> None:
        super().on_head(status, headers)
        self.stream.status = status
        self.failed_status = status >= 400

    def on_body(self, data: bytes, now_ns: int) -> None:
        self.got_bytes = True
        self.fed = True
        stream = self.stream
        if self.failed_status:
            self.error_body += data[: self.ERROR_BODY_BYTES - len(self.error_body)]
            return
        now = (now_ns - self.start_ns) * NS
        if stream.ttfb is None:
            stream.ttfb = now
            self._arm(self.timeouts.stall_s)
        for payload in self.parser.feed_data(data):
            _apply_event(payload, stream, now)
        if stream.error is not None:
            self._give_up()

    def on_end(self, error: Exception | None) -> None:
        self.stop()
        stream = self.stream
        if self.failed_status:
            text = bytes(self.error_body).decode("utf-8", errors="replace")
            stream.fail("http", f"HTTP {stream.status}: {text[:300]}")
        elif error is not None:
            self.broken = error
            if not self.stale():
                kind = "malformed" if isinstance(error, WireError) else "reset"
                stream.fail(kind, f"connection broken: {error}")
        elif stream.error is None:
            now = (time.perf_counter_ns() - self.start_ns) * NS
            for payload in self.parser.close_data():
                _apply_event(payload, stream, now)
            if stream.error is None and not stream.done:
                stream.fail("reset", "the stream ended before [DONE]")
        super().on_end(error)


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Chunk(msgspec.Struct):
    """The fields of a chat.completion.chunk that the client reads; the rest is skipped unparsed."""

    id: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = msgspec.UNSET


# Typed decoding skips what it does not need and builds no dicts: ~0.6 µs a chunk against ~5 µs for
# json.loads here, the largest single cost of a client reading 100k chunks a second.
_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def _apply_event(payload: bytes, stream: _Stream, now: float) -> None:
    """Fold one SSE data payload into the stream."""
    if payload == b"[DONE]" or payload.strip() == b"[DONE]":
        stream.done = True
        return
    try:
        chunk = _decode_chunk(payload)
    except msgspec.ValidationError:
        _apply_untyped(payload, stream, now)  # valid JSON of an unexpected shape: judge it field by field
        return
    except msgspec.DecodeError:
        stream.fail("malformed", f"not JSON in the stream: {payload[:120]!r}")
        return
    if chunk.error is not msgspec.UNSET:
        _fail_with(stream, chunk.error)
        return
    if stream.request_id is None:
        stream.request_id = chunk.id
    if chunk.usage is not None:
        _count(stream, chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    carried = False
    for choice in chunk.choices or ():
        delta = choice.delta or _NO_DELTA
        # vLLM names it `reasoning`; other servers still send `reasoning_content`.
        reasoning = delta.reasoning or delta.reasoning_content
        carried |= _fold(stream, now, delta.content, reasoning, delta.tool_calls, choice.finish_reason)
    if carried:
        _mark_token(stream, now)


_NO_DELTA = _Delta()


def _apply_untyped(payload: bytes, stream: _Stream, now: float) -> None:
    """The slow, forgiving path for a chunk whose fields do not have the usual types."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        stream.fail("malformed", f"not JSON in the stream: {payload[:120]!r}")
        return
    if not isinstance(chunk, dict):
        stream.fail("malformed", f"unexpected event: {payload[:120]!r}")
        return
    if "error" in chunk:
        _fail_with(stream, chunk["error"])
        return
    if stream.request_id is None and isinstance(chunk.get("id"), str):
        stream.request_id = chunk["id"]
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        _count(stream, *(_typed(usage.get(key), int) for key in ("prompt_tokens", "completion_tokens")))
    carried = False
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        delta: dict[str, Any] = _typed(choice.get("delta"), dict) or {}
        carried |= _fold(
            stream,
            now,
            _typed(delta.get("content"), str),
            _typed(delta.get("reasoning") or delta.get("reasoning_content"), str),
            _typed(delta.get("tool_calls"), list),
            _typed(choice.get("finish_reason"), str),
        )
    if carried:
        _mark_token(stream, now)


def _typed(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) else None


def _fail_with(stream: _Stream, error: Any) -> None:
    message = error.get("message", error) if isinstance(error, dict) else error
    stream.fail("stream_error", f"error in the stream: {message}")


def _count(stream: _Stream, prompt_tokens: int | None, completion_tokens: int | None) -> None:
    if prompt_tokens is not None:
        stream.prompt_tokens = prompt_tokens
    if completion_tokens is not None:
        stream.completion_tokens = completion_tokens


def _fold(
    stream: _Stream,
    now: float,
    content: str | None,
    reasoning: str | None,
    tool_calls: list[Any] | None,
    finish_reason: str | None,
) -> bool:
    """One choice's delta into the stream; True when it carried a token of any kind."""
    carried = False
    if reasoning:
        stream.reasoning.append(reasoning)
        carried = True
    if content:
        stream.content.append(content)
        carried = True
        if stream.ttfo is None:
            stream.ttfo = now
    if tool_calls:
        stream.tool_calls.extend(tool_calls)
        carried = True
    if finish_reason:
        stream.finish_reason = finish_reason
    return carried


def _mark_token(stream: _Stream, now: float) -> None:
    if stream.ttft is None:
        stream.ttft = now
    stream.last = now
    stream.chunk_times.append(now)
