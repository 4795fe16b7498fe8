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

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from flashspark.client.sse import SSEParser
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

    It streams with aiohttp, whose C HTTP parser keeps a single client core
    ahead of the server at hundreds of streams; httpx's pure-Python chunk
    parsing was the bottleneck at ~12k tokens/s (benchmarks/client_bench.py).
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
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._model: str | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running event loop that will use it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections, force_close=False),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect_s),
            )
        return self._session

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- plain endpoints -------------------------------------------------------------

    async def _get(self, url: str) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeouts.connect_s + self.timeouts.stall_s):
                async with self.session.get(url) as response:
                    return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(
                f"GET {url} failed: {exc or type(exc).__name__}",
                where=url,
                fix="check that the server is up and the base URL is right",
            ) from exc

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

    async def models(self) -> list[dict[str, Any]]:
        """The entries of GET /v1/models."""
        data: list[dict[str, Any]] = (await self._get_json(f"{self.api}/models")).get("data", [])
        return data

    async def default_model(self) -> str:
        """The first model the server lists, cached: what `--model` defaults to."""
        if self._model is None:
            listed = await self.models()
            if not listed:
                raise ClientError(
                    f"{self.api}/models lists no models", where=self.api, fix="pass --model, or check the server"
                )
            self._model = str(listed[0]["id"])
        return self._model

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
            async with asyncio.timeout(self.timeouts.total_s):
                await self._stream(request.body(model), stream, start)
        except ClientError as exc:
            stream.fail("connect", exc.message)
        except TimeoutError:
            if stream.error is None:
                stream.fail("timeout", f"request exceeded its total budget of {self.timeouts.total_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            stream.fail("connect", f"cannot connect to {self.api}: {exc}")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionError) as exc:
            stream.fail("reset", f"connection broken: {exc or type(exc).__name__}")
        except aiohttp.ClientError as exc:
            stream.fail("http", f"{type(exc).__name__}: {exc}")
        return stream.result(started_at, (time.perf_counter_ns() - start) * NS)

    async def _stream(self, body: dict[str, Any], stream: _Stream, start: int) -> None:
        watchdog = _Watchdog(self.timeouts.first_byte_s, self.timeouts.stall_s)
        async with self.session.post(f"{self.api}/chat/completions", json=body) as response:
            stream.status = response.status
            if response.status >= 400:
                text = (await response.read()).decode("utf-8", errors="replace")
                stream.fail("http", f"HTTP {response.status}: {text[:300]}")
                return
            parser = SSEParser()
            reader = response.content
            watchdog.start()
            try:
                while True:
                    data = await reader.readany()
                    if not data:
                        break
                    now = (time.perf_counter_ns() - start) * NS
                    watchdog.fed = True
                    if stream.ttfb is None:
                        stream.ttfb = now
                        watchdog.first_data()
                    for event in parser.feed(data):
                        _apply_event(event.data, stream, now)
                    if stream.error is not None:
                        return
            except asyncio.CancelledError:
                if not watchdog.fired:
                    raise
                if stream.ttfb is None:
                    stream.fail("timeout", f"no first byte within {self.timeouts.first_byte_s:g} s")
                else:
                    stream.fail("stall", f"no data for {self.timeouts.stall_s:g} s")
                return
            finally:
                watchdog.stop()
            for event in parser.close():
                _apply_event(event.data, stream, (time.perf_counter_ns() - start) * NS)
            if stream.error is None and not stream.done:
                stream.fail("reset", "the stream ended before [DONE]")


class _Watchdog:
    """Cancels the reading task when no data arrived within the budget.

    One timer per budget period instead of a timeout object per read: at 100k
    chunks a second, per-read timeouts cost more than parsing the chunks. A
    stall is therefore noticed between one and two budgets after the last data.
    """

    def __init__(self, first_byte_s: float, stall_s: float) -> None:
        self.first_byte_s = first_byte_s
        self.stall_s = stall_s
        self.fed = False
        self.fired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self._task = asyncio.current_task()
        self._arm(self.first_byte_s)

    def first_data(self) -> None:
        """The first byte came: from now on the stall budget applies."""
        self.stop()
        self.fed = False
        self._arm(self.stall_s)

    def _arm(self, delay: float) -> None:
        self._handle = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        if self.fed:
            self.fed = False
            self._arm(self.stall_s)
            return
        self.fired = True
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def _apply_event(data: str, stream: _Stream, now: float) -> None:
    """Fold one SSE data payload into the stream."""
    if data == "[DONE]" or data.strip() == "[DONE]":
        stream.done = True
        return
    try:
        chunk = json.loads(data)
    except ValueError:
        stream.fail("malformed", f"not JSON in the stream: {data[:120]!r}")
        return
    if not isinstance(chunk, dict):
        stream.fail("malformed", f"unexpected event: {data[:120]!r}")
        return
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        stream.fail("stream_error", f"error in the stream: {message}")
        return
    if stream.request_id is None:
        stream.request_id = chunk.get("id")
    usage = chunk.get("usage")
    if usage:
        stream.prompt_tokens = usage.get("prompt_tokens", stream.prompt_tokens)
        stream.completion_tokens = usage.get("completion_tokens", stream.completion_tokens)
    carried = False
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        # vLLM names it `reasoning`; other servers still send `reasoning_content`.
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if reasoning:
            stream.reasoning.append(reasoning)
            carried = True
        if content:
            stream.content.append(content)
            carried = True
            if stream.ttfo is None:
                stream.ttfo = now
        if delta.get("tool_calls"):
            stream.tool_calls.extend(delta["tool_calls"])
            carried = True
        if choice.get("finish_reason"):
            stream.finish_reason = choice["finish_reason"]
    if carried:
        if stream.ttft is None:
            stream.ttft = now
        stream.last = now
        stream.chunk_times.append(now)
