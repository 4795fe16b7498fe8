"""`flashspark replay FILE`: send recorded harness requests again, to any server, and judge the answers.

A recording is real traffic: the prompts, tools and sampling settings an agent harness actually sent.
Replaying it against a new image, profile or server shows whether that traffic still gets answers,
with the checks of the gates and the recipe's answer scoring (`gates.answer`). Requests go out
with their recorded spacing (`original`) or as fast as the concurrency allows (`fast`); each is
streamed (so TTFT is measured) whatever the harness asked. A salt put in front of the system prompt
makes every prefill cold, as the recipe's COLD=1 did.

Writes replay.json (versioned, with pins) and replay.jsonl (one line per exchange as it ends).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, OpenAIClient
from flashspark.files import append_line, write_json
from flashspark.gates.answer import Verdict, score_answer
from flashspark.pins import Pins
from flashspark.traffic.exchange import Exchange

REPLAY_SCHEMA_VERSION = 1
Timing = Literal["original", "fast"]
# Fields of a recorded body the replay sets itself (streaming, so TTFT is measured, and the model).
_OWN_FIELDS = {"messages", "model", "stream", "stream_options"}


class ReplayOutcome(BaseModel):
    """One recorded request sent again: how it went and what the answer scoring says."""

    model_config = ConfigDict(extra="forbid")

    index: int
    exchange_id: str
    scheduled_s: float = Field(description="When it was due, from the replay's start.")
    sent_s: float = Field(description="When it went out: later than due when the concurrency cap held it.")
    ok: bool
    error: str | None = None
    verdict: Verdict
    flags: list[dict[str, str]] = Field(default_factory=list)
    recorded_verdict: Verdict | None = None
    same_tools: bool | None = Field(
        default=None, description="The answer called the same functions as the recorded one (None: no calls in either)."
    )
    content: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    decode_tokens_per_s: float | None = None


class ReplayResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = REPLAY_SCHEMA_VERSION
    kind: str = "replay"
    created_at: str
    source: str
    base_url: str
    model: str
    timing: Timing
    concurrency: int
    salted: bool
    skipped: int = Field(description="Recorded exchanges that were not chat completions (not replayed).")
    outcomes: list[ReplayOutcome]
    wall_s: float
    pins: Pins

    @property
    def verdicts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.verdict] = counts.get(outcome.verdict, 0) + 1
        return counts

    @property
    def ok(self) -> bool:
        return all(o.verdict == "healthy" for o in self.outcomes)


def salted(messages: list[dict[str, Any]], salt: str) -> list[dict[str, Any]]:
    """The messages with `salt` leading the first system message (one is added when there is none)."""
    out = [dict(m) for m in messages]
    for message in out:
        if message.get("role") in ("system", "developer") and isinstance(message.get("content"), str):
            message["content"] = f"{salt}\n{message['content']}"
            return out
    return [{"role": "system", "content": salt}, *out]


def replay_request(exchange: Exchange, model: str, salt: str | None) -> ChatRequest:
    """The recorded body as a streamed chat request to `model`, everything else as the harness sent it."""
    body: dict[str, Any] = exchange.request if isinstance(exchange.request, dict) else {}
    given = body.get("messages")
    messages: list[dict[str, Any]] = [m for m in given if isinstance(m, dict)] if isinstance(given, list) else []
    return ChatRequest(
        messages=salted(messages, salt) if salt else messages,
        model=model,
        extra={key: value for key, value in body.items() if key not in _OWN_FIELDS},
    )


def _called(calls: list[dict[str, Any]]) -> list[str]:
    return sorted(str((c.get("function") or {}).get("name")) for c in calls)


async def run_replay(
    client: OpenAIClient,
    exchanges: list[Exchange],
    *,
    source: str,
    run_dir: Path,
    model: str | None = None,
    timing: Timing = "fast",
    concurrency: int = 1,
    salt: bool = False,
    pins: Pins | None = None,
    on_outcome: Callable[[ReplayOutcome], None] | None = None,
) -> ReplayResults:
    chats = [e for e in exchanges if e.is_chat and isinstance(e.request, dict)]
    served = model or await _model_for(client, chats)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    slots = asyncio.Semaphore(concurrency)
    first = chats[0].offset_s if chats else 0.0
    start = time.perf_counter()
    outcomes: list[ReplayOutcome] = []
    all_pins = Pins(vllm_version=await client.version(), served_model=served).under(pins)

    async def one(index: int, exchange: Exchange) -> None:
        due = exchange.offset_s - first if timing == "original" else 0.0
        await asyncio.sleep(max(0.0, due - (time.perf_counter() - start)))
        async with slots:
            sent = time.perf_counter() - start
            request = replay_request(exchange, served, f"Replay {run_id}, exchange {index}." if salt else None)
            result = await client.stream_chat(request)
        verdict, hits = score_answer(result, request.messages)
        recorded, now = _called(exchange.tool_calls), _called(result.tool_calls)
        outcome = ReplayOutcome(
            index=index,
            exchange_id=exchange.id,
            scheduled_s=round(due, 4),
            sent_s=round(sent, 4),
            ok=result.ok,
            error=result.error,
            verdict=verdict,
            flags=[{"detector": h.detector, "detail": h.detail} for h in hits],
            recorded_verdict=exchange.verdict,
            same_tools=recorded == now if recorded or now else None,
            content=result.content,
            tool_calls=result.tool_calls,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttft_s=result.ttft_s,
            e2e_s=result.e2e_s,
            decode_tokens_per_s=result.decode_tokens_per_s,
        )
        outcomes.append(outcome)
        with open(run_dir / "replay.jsonl", "a", encoding="utf-8") as handle:
            append_line(handle, outcome.model_dump_json())
        if on_outcome is not None:
            on_outcome(outcome)

    await asyncio.gather(*(one(i, e) for i, e in enumerate(chats)))
    outcomes.sort(key=lambda o: o.index)
    results = ReplayResults(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=source,
        base_url=client.api,
        model=served,
        timing=timing,
        concurrency=concurrency,
        salted=salt,
        skipped=len(exchanges) - len(chats),
        outcomes=outcomes,
        wall_s=round(time.perf_counter() - start, 3),
        pins=all_pins,
    )
    write_json(run_dir / "replay.json", results.model_dump(mode="json"))
    return results


async def _model_for(client: OpenAIClient, chats: list[Exchange]) -> str:
    """The recorded model when this server serves it, else the server's first model."""
    served = {entry.id for entry in await client.models()}
    for exchange in chats:
        named = exchange.request.get("model") if isinstance(exchange.request, dict) else None
        if isinstance(named, str) and named in served:
            return named
    return await client.default_model()


def read_replay(run_dir: Path) -> ReplayResults:
    return ReplayResults.model_validate(json.loads((run_dir / "replay.json").read_text()))


__all__ = ["ReplayOutcome", "ReplayResults", "read_replay", "replay_request", "run_replay", "salted"]
