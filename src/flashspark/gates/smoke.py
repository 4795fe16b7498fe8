"""The smoke gate: N concurrent deterministic requests that must each return the expected text exactly.

The recipe's smoke test only checked that a reply contained `"choices"`. Here
every reply must equal the expected text. The prompt is a few-shot echo
("Repeat after me: ...", answered twice, then the phrase) because a 135M model
does not obey "Reply with exactly: X" but does continue the pattern, and
DeepSeek-V4 answers it the same way with thinking off.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, ChatResult, OpenAIClient, thinking_off
from flashspark.errors import ClientError
from flashspark.gates.options import SMOKE, SMOKE_PHRASE

DEFAULT_EXPECT = SMOKE.expect
SMOKE_SCHEMA_VERSION = 1


def smoke_messages(phrase: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You repeat the user's phrase exactly, with nothing else."},
        {"role": "user", "content": "Repeat after me: BLUE SKY 42"},
        {"role": "assistant", "content": "BLUE SKY 42"},
        {"role": "user", "content": "Repeat after me: GREEN TREE 7"},
        {"role": "assistant", "content": "GREEN TREE 7"},
        {"role": "user", "content": f"Repeat after me: {phrase}"},
    ]


def smoke_request(phrase: str, *, model: str | None, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=smoke_messages(phrase),
        model=model,
        max_tokens=max_tokens,
        temperature=0.0,
        extra=thinking_off(),
    )


class SmokeRequestResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    ok: bool
    content: str
    error: str | None
    finish_reason: str | None
    completion_tokens: int | None
    ttft_s: float | None
    e2e_s: float | None


class SmokeReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SMOKE_SCHEMA_VERSION
    ok: bool
    base_url: str
    model: str | None
    phrase: str
    expect: str
    concurrency: int
    passed: int
    wall_s: float
    requests: list[SmokeRequestResult] = Field(default_factory=list)


def judge(index: int, result: ChatResult, expect: str) -> SmokeRequestResult:
    error = result.error
    if error is None and result.content.strip() != expect:
        error = f"expected {expect!r}, got {result.content.strip()[:200]!r}"
    return SmokeRequestResult(
        index=index,
        ok=error is None,
        content=result.content,
        error=error,
        finish_reason=result.finish_reason,
        completion_tokens=result.completion_tokens,
        ttft_s=result.ttft_s,
        e2e_s=result.e2e_s,
    )


async def run_smoke(
    client: OpenAIClient,
    *,
    concurrency: int = SMOKE.concurrency,
    expect: str = SMOKE.expect,
    phrase: str = SMOKE_PHRASE,
    model: str | None = None,
    max_tokens: int = SMOKE.max_tokens,
) -> SmokeReport:
    """Send `concurrency` identical deterministic requests at once; every reply must equal `expect`.

    The prompt asks the model to repeat `phrase`; a healthy deployment answers
    exactly that, so `expect` differs from `phrase` only to test the gate itself.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    model = model or await listed_model(client)
    request = smoke_request(phrase, model=model, max_tokens=max_tokens)
    results = await asyncio.gather(*(client.stream_chat(request) for _ in range(concurrency)))
    judged = [judge(i, r, expect) for i, r in enumerate(results)]
    passed = sum(r.ok for r in judged)
    return SmokeReport(
        ok=passed == concurrency,
        base_url=client.api,
        model=model,
        phrase=phrase,
        expect=expect,
        concurrency=concurrency,
        passed=passed,
        wall_s=loop.time() - started,
        requests=judged,
    )


async def listed_model(client: OpenAIClient) -> str | None:
    """The first model the server lists, or None when it cannot say (each request then reports why)."""
    try:
        return await client.default_model()
    except (ClientError, ValueError, KeyError):
        return None  # an unreachable server is then reported per request
