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
from typing import Any

from pydantic import ValidationError

from flashspark._version import __version__
from flashspark.client.chunks import StreamState, apply_event
from flashspark.client.schema import ChatRequest, ChatResult, ModelEntry, Timeouts, normalize_base_url
from flashspark.client.sse import SSEOverflow, SSEParser
from flashspark.client.wire import Connection, ConnectionPool, Origin, WireError, request_bytes
from flashspark.errors import ClientError, HTTPStatusError, InputError
from flashspark.redact import add_masks

NS = 1e-9


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
        headers: dict[str, str] | None = None,
    ) -> None:
        self.root, self.api = normalize_base_url(base_url)
        self.api_key = api_key
        add_masks([api_key])
        self.timeouts = timeouts or Timeouts()
        try:
            self._origin = Origin.from_url(self.root)
        except ValueError as exc:
            raise ClientError(str(exc), key="base_url", value=base_url, fix="use http://HOST:PORT[/v1]") from None
        self._api_path = self.api[len(self.root) :]
        self._headers = {"User-Agent": f"flashspark/{__version__}", "Accept": "application/json, text/event-stream"}
        if api_key:
            if not all(" " < ch < "\x7f" for ch in api_key):
                # A header value ends at CR/LF: one in a key would add headers of its own.
                raise ClientError(
                    "the API key holds a space, a control or a non-ASCII character",
                    key="api_key",
                    fix="use the key exactly as the server was given it (printable ASCII, no spaces)",
                )
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.extra_headers = {_header_name(name): _header_value(name, value) for name, value in (headers or {}).items()}
        add_masks([value for name, value in self.extra_headers.items() if name.lower() == "authorization"])
        self._headers.update(self.extra_headers)
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

    async def _call(
        self, method: str, url: str, body: Any = None, *, budget_s: float | None = None
    ) -> tuple[int, bytes]:
        """One small request (a JSON body when given) and its whole response, in a time budget (default:
        connect + stall)."""
        path = url[len(self.root) :] if url.startswith(self.root) else url
        collected = _Collect(budget_s or self.timeouts.connect_s + self.timeouts.stall_s)
        headers, payload = self._headers, b""
        if body is not None:
            headers = headers | {"Content-Type": "application/json"}
            payload = json.dumps(body, separators=(",", ":")).encode()
        data = request_bytes(method, self._origin, path, headers, payload)
        try:
            await self._exchange(data, collected)
        except (OSError, WireError) as exc:  # TimeoutError is an OSError
            raise ClientError(
                f"{method} {url} failed: {exc or type(exc).__name__}",
                where=url,
                fix="check that the server is up and the base URL is right",
            ) from exc
        return collected.status, b"".join(collected.body)

    async def _get(self, url: str) -> tuple[int, bytes]:
        return await self._call("GET", url)

    async def _json(self, method: str, url: str, body: Any = None, *, budget_s: float | None = None) -> Any:
        """A request whose answer must be JSON: an HTTP error or a body that is not JSON is a ClientError."""
        status, answer = await self._call(method, url, body, budget_s=budget_s)
        if status >= 400:
            raise HTTPStatusError(
                f"{method} {url} answered {status}", status_code=status, body=answer[:300].decode(errors="replace")
            )
        try:
            return json.loads(answer)
        except ValueError as exc:
            raise ClientError(f"{method} {url} did not return JSON", where=url) from exc

    async def _get_json(self, url: str) -> Any:
        return await self._json("GET", url)

    async def tokenize(self, messages: list[dict[str, Any]], *, model: str | None = None) -> int:
        """How many prompt tokens these chat messages are on this server: vLLM's POST /tokenize, with the
        model's chat template and the generation prompt, as a chat request would be counted."""
        body = {"model": model or await self.default_model(), "messages": messages, "add_generation_prompt": True}
        url = f"{self.root}/tokenize"
        # Tokenizing a 1M-token prompt takes a while: the first-byte budget, not the stall budget.
        answer = await self._json("POST", url, body, budget_s=self.timeouts.connect_s + self.timeouts.first_byte_s)
        count = answer.get("count") if isinstance(answer, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ClientError(f"POST {url} returned a count that is not a token count: {count!r}", where=url)
        return count

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

    async def request(self, method: str, path: str, *, budget_s: float | None = None) -> tuple[int, bytes]:
        """A bodiless request to a path under the server's root (an admin route): (status, body)."""
        return await self._call(method, f"{self.root}{path}", budget_s=budget_s)

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
        stream = StreamState()
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

    async def relay(self, method: str, path: str, headers: dict[str, str], body: bytes, handler: Exchange) -> None:
        """Send one request as given (`path` under the server's root, `headers` besides Host and
        Content-Length) and wait for its response to end; the response goes to `handler` as it arrives.

        For a proxy: the request and the response are someone else's, only the connection is ours.
        """
        await self._exchange(request_bytes(method, self._origin, path, headers, body), handler)

    async def _exchange(self, data: bytes, handler: Exchange) -> None:
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


# Headers the client frames or routes by itself: one given by a user would corrupt the request.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type", "te", "upgrade"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _header_name(name: str) -> str:
    if not name or not set(name) <= _TOKEN:
        raise InputError(
            f"{name!r} is not an HTTP header name", key="--header", value=name, fix="write NAME:VALUE, e.g. X-Team:a"
        )
    if name.lower() in _OWN_HEADERS:
        raise InputError(f"the client sets {name} itself", key="--header", value=name, fix="leave it out")
    return name


def _header_value(name: str, value: str) -> str:
    # A header value ends at CR/LF: one inside would add headers (or a body) of the user's making.
    if not all(" " <= ch < "\x7f" or ch == "\t" for ch in value):
        raise InputError(
            f"the value of header {name} holds a control or non-ASCII character",
            key="--header",
            value=name,
            fix="use printable ASCII only",
        )
    return value.strip()


class Exchange:
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


class _Collect(Exchange):
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


class _ChatStream(Exchange):
    """Folds a streamed chat answer into `StreamState` as its bytes arrive, timed at their arrival.

    The first-byte and stall budgets are one timer per budget period, not a
    timeout per read: at 100k chunks a second per-read timers cost more than
    parsing the chunks. A stall is therefore noticed between one and two
    budgets after the last data.
    """

    ERROR_BODY_BYTES = 4096

    def __init__(self, stream: StreamState, start_ns: int, timeouts: Timeouts) -> None:
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
        try:
            payloads = self.parser.feed_data(data)
        except SSEOverflow as overflow:
            stream.fail("malformed", str(overflow))
            payloads = []
        for payload in payloads:
            apply_event(payload, stream, now)
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
                apply_event(payload, stream, now)
            if stream.error is None and not stream.done:
                stream.fail("reset", "the stream ended before [DONE]")
        super().on_end(error)
