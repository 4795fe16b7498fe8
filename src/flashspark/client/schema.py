"""The data that crosses the client's boundary: a chat request, its result, the timeouts, a listed model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
    """Budgets in seconds: connect, first byte, the longest gap between chunks, the whole request.

    The defaults notice a dead or stalled server in seconds: a healthy engine streams a chunk at
    every decode step (well under a second, even behind chunked prefill), so 30 s without a byte is
    a stall. The first byte waits for prefill: raise `first_byte_s` for prompts of 100K tokens and
    more (TTFT grows to minutes there), and `total_s` for very long decodes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_s: float = Field(default=10.0, gt=0, le=3600)
    first_byte_s: float = Field(default=120.0, gt=0, le=86400)
    stall_s: float = Field(default=30.0, gt=0, le=86400)
    total_s: float = Field(default=1800.0, gt=0, le=7 * 86400)


# Asking a server how it is (readiness, status, capture, the supervisor): short budgets, a few seconds.
PROBE_TIMEOUTS = Timeouts(connect_s=5.0, first_byte_s=10.0, stall_s=10.0, total_s=30.0)


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
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list, description="Whole calls ({id, type, function: {name, arguments}}), deltas merged."
    )
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
    token_marks: list[tuple[int, int]] = Field(
        default_factory=list,
        description="(content characters, completion tokens) so far, at each chunk with cumulative usage "
        "(asked for with stream_options.continuous_usage_stats): which token each part of the text is.",
    )

    @property
    def decode_tokens_per_s(self) -> float | None:
        """(N - 1) / (t_last - t_first): per-token, not per-chunk, so multi-token chunks count right."""
        n = self.completion_tokens
        if n is None or n < 2 or self.ttft_s is None or self.last_token_s is None:
            return None
        span = self.last_token_s - self.ttft_s
        return (n - 1) / span if span > 0 else None


def thinking_off(**extra: Any) -> dict[str, Any]:
    """A request's extra body with thinking off for DeepSeek-V4 (both spellings its templates read; other
    templates ignore them), and `extra`. A fresh dict each call: callers add to it."""
    return {"chat_template_kwargs": {"thinking": False, "enable_thinking": False}, **extra}


def normalize_base_url(url: str) -> tuple[str, str]:
    """(server root, OpenAI API base) from either form: http://h:p or http://h:p/v1."""
    url = url.rstrip("/")
    if url.endswith("/v1"):
        return url[: -len("/v1")], url
    return url, url + "/v1"
