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

import httpx
from pydantic import BaseModel, ConfigDict, Field

from flashspark.client.sse import SSEParser

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


class OpenAIClient:
    """Async client for one OpenAI-compatible server (vLLM first, any other second)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 256,
    ) -> None:
        self.root, self.api = normalize_base_url(base_url)
        self.timeouts = timeouts or Timeouts()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(
                connect=self.timeouts.connect_s,
                read=self.timeouts.stall_s,
                write=self.timeouts.connect_s,
                pool=None,
            ),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._model: str | None = None

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plain endpoints -------------------------------------------------------------

    async def health(self) -> int:
        """HTTP status of GET /health (vLLM: 200 alive, 503 engine dead)."""
        response = await self._http.get(f"{self.root}/health")
        return response.status_code

    async def models(self) -> list[dict[str, Any]]:
        """The entries of GET /v1/models."""
        response = await self._http.get(f"{self.api}/models")
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json().get("data", [])
        return data

    async def default_model(self) -> str:
        """The first model the server lists, cached: what `--model` defaults to."""
        if self._model is None:
            listed = await self.models()
            if not listed:
                raise httpx.HTTPError("the server lists no models")
            self._model = str(listed[0]["id"])
        return self._model

    async def metrics_text(self) -> str:
        response = await self._http.get(f"{self.root}/metrics")
        response.raise_for_status()
        return response.text

    async def version(self) -> str | None:
        response = await self._http.get(f"{self.root}/version")
        if response.status_code != 200:
            return None
        value = response.json().get("version")
        return str(value) if value is not None else None

    # --- streaming chat --------------------------------------------------------------

    async def stream_chat(self, request: ChatRequest) -> ChatResult:
        """Send one streaming chat request; every failure is recorded in the result."""
        result = ChatResult(started_at=time.time())
        start = time.perf_counter_ns()
        try:
            model = request.model or await self.default_model()
            async with asyncio.timeout(self.timeouts.total_s):
                await self._stream(request.body(model), result, start)
        except TimeoutError:
            _fail(result, "timeout", f"request exceeded its total budget of {self.timeouts.total_s:g} s")
        except httpx.ReadTimeout:
            kind = "stall" if result.ttfb_s is not None else "timeout"
            _fail(result, kind, f"no data for {self.timeouts.stall_s:g} s")
        except httpx.ConnectError as exc:
            _fail(result, "connect", f"cannot connect to {self.api}: {exc}")
        except httpx.TimeoutException as exc:
            _fail(result, "timeout", f"{type(exc).__name__}: {exc}")
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            _fail(result, "reset", f"connection broken: {exc or type(exc).__name__}")
        except httpx.HTTPError as exc:
            _fail(result, "http", f"{type(exc).__name__}: {exc}")
        result.e2e_s = (time.perf_counter_ns() - start) * NS
        result.ok = result.error is None
        return result

    async def _stream(self, body: dict[str, Any], result: ChatResult, start: int) -> None:
        async with self._http.stream("POST", f"{self.api}/chat/completions", json=body) as response:
            result.status_code = response.status_code
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", errors="replace")
                _fail(result, "http", f"HTTP {response.status_code}: {text[:300]}")
                return
            parser = SSEParser()
            done = False
            async for chunk in response.aiter_bytes():
                now = (time.perf_counter_ns() - start) * NS
                if result.ttfb_s is None:
                    result.ttfb_s = now
                for event in parser.feed(chunk):
                    done = _apply_event(event.data, result, now) or done
                if result.error is not None:
                    return
            for event in parser.close():
                done = _apply_event(event.data, result, (time.perf_counter_ns() - start) * NS) or done
            if result.error is None and not done:
                _fail(result, "reset", "the stream ended before [DONE]")


def _apply_event(data: str, result: ChatResult, now: float) -> bool:
    """Fold one SSE data payload into the result; True when it was the final [DONE]."""
    if data.strip() == "[DONE]":
        return True
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        _fail(result, "malformed", f"not JSON in the stream: {data[:120]!r}")
        return False
    if not isinstance(chunk, dict):
        _fail(result, "malformed", f"unexpected event: {data[:120]!r}")
        return False
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        _fail(result, "stream_error", f"error in the stream: {message}")
        return False
    result.request_id = result.request_id or chunk.get("id")
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        result.prompt_tokens = usage.get("prompt_tokens", result.prompt_tokens)
        result.completion_tokens = usage.get("completion_tokens", result.completion_tokens)
    carried = False
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        content = delta.get("content")
        # vLLM names it `reasoning`; other servers still send `reasoning_content`.
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if reasoning:
            result.reasoning += reasoning
            carried = True
        if content:
            result.content += content
            carried = True
            if result.ttfo_s is None:
                result.ttfo_s = now
        if delta.get("tool_calls"):
            result.tool_calls.extend(delta["tool_calls"])
            carried = True
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    if carried:
        if result.ttft_s is None:
            result.ttft_s = now
        result.last_token_s = now
        result.chunk_times_s.append(now)
    return False


def _fail(result: ChatResult, kind: str, message: str) -> None:
    if result.error is None:
        result.error_kind = kind
        result.error = message
    result.ok = False
