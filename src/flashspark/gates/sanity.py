"""The agent garble gate (`flashspark sanity`): concurrency levels of agent-shaped prompts, every reply checked.

Each level's requests are launched together. A request is good when it
completed and no detector fired; the gate passes when every request of every
level is good. Every request's evidence is appended to a JSONL file as it
finishes, so a killed run keeps what it saw.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, ChatResult, OpenAIClient, thinking_off
from flashspark.files import append_line
from flashspark.gates import garble
from flashspark.gates.options import SANITY
from flashspark.gates.prompts import prompt_for

SANITY_SCHEMA_VERSION = 1
DEFAULT_LEVELS = SANITY.levels


class RequestEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: int
    index: int
    kind: str
    good: bool
    error: str | None
    error_kind: str | None
    hits: list[dict[str, str]]
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    e2e_s: float | None
    decode_tokens_per_s: float | None
    sample: str


class LevelSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int
    good: int
    total: int
    bad: int
    errors: int
    wall_s: float
    completion_tokens: int
    aggregate_tokens_per_s: float
    per_request_tokens_per_s_mean: float | None
    detectors_fired: dict[str, int] = Field(default_factory=dict)

    @property
    def success(self) -> str:
        return f"{self.good}/{self.total}"


class SanityReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SANITY_SCHEMA_VERSION
    ok: bool
    model: str | None
    strict_cjk: bool
    max_tokens: int
    levels: list[LevelSummary]
    evidence_path: str | None

    @property
    def detectors_fired(self) -> dict[str, int]:
        fired: dict[str, int] = {}
        for level in self.levels:
            for name, count in level.detectors_fired.items():
                fired[name] = fired.get(name, 0) + count
        return fired


def judge_reply(result: ChatResult, *, strict_cjk: bool, thinking: bool = False) -> list[garble.Hit]:
    """All detector hits for one finished request."""
    return [
        *garble.text_detectors(result.content, strict_cjk=strict_cjk),
        *garble.empty_with_tokens(result.content, result.completion_tokens, bool(result.tool_calls)),
        *garble.reasoning_only(result.content, result.reasoning, thinking),
        *garble.length_without_content(result.content, result.finish_reason),
    ]


def evidence_for(level: int, index: int, kind: str, result: ChatResult, hits: list[garble.Hit]) -> RequestEvidence:
    return RequestEvidence(
        level=level,
        index=index,
        kind=kind,
        good=result.ok and not hits,
        error=result.error,
        error_kind=result.error_kind,
        hits=[{"detector": h.detector, "detail": h.detail} for h in hits],
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        ttft_s=result.ttft_s,
        e2e_s=result.e2e_s,
        decode_tokens_per_s=result.decode_tokens_per_s,
        sample=(result.content or result.reasoning)[:200],
    )


def summarize(level: int, rows: list[RequestEvidence], wall_s: float) -> LevelSummary:
    tokens = sum(r.completion_tokens or 0 for r in rows if r.error is None)
    rates = [r.decode_tokens_per_s for r in rows if r.decode_tokens_per_s is not None]
    fired: dict[str, int] = {}
    for row in rows:
        for hit in row.hits:
            fired[hit["detector"]] = fired.get(hit["detector"], 0) + 1
    good = sum(r.good for r in rows)
    return LevelSummary(
        concurrency=level,
        good=good,
        total=len(rows),
        bad=len(rows) - good,
        errors=sum(r.error is not None for r in rows),
        wall_s=wall_s,
        completion_tokens=tokens,
        aggregate_tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        per_request_tokens_per_s_mean=sum(rates) / len(rates) if rates else None,
        detectors_fired=fired,
    )


async def run_sanity(
    client: OpenAIClient,
    *,
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    model: str | None = None,
    max_tokens: int = SANITY.max_tokens,
    strict_cjk: bool = SANITY.strict_cjk,
    evidence_path: Path | None = None,
    on_level: Callable[[LevelSummary], None] | None = None,
) -> SanityReport:
    """Run every level in turn; requests of a level start together."""
    model = model or await client.default_model()
    run = uuid.uuid4().hex[:8]
    summaries: list[LevelSummary] = []
    if evidence_path is not None:
        evidence_path.parent.mkdir(parents=True, exist_ok=True)
    for level in levels:
        prompts = [prompt_for(i, run=f"{run}c{level}") for i in range(level)]
        rows: list[RequestEvidence] = []

        async def one(index: int, level: int = level, prompts: Any = prompts, rows: Any = rows) -> None:
            request = ChatRequest(
                model=model,
                messages=prompts[index].messages,
                max_tokens=max_tokens,
                temperature=0.0,
                extra=thinking_off(),
            )
            result = await client.stream_chat(request)
            row = evidence_for(level, index, prompts[index].kind, result, judge_reply(result, strict_cjk=strict_cjk))
            rows.append(row)
            if evidence_path is not None:
                with open(evidence_path, "a", encoding="utf-8") as handle:
                    append_line(handle, row.model_dump_json())

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(level)))
        summary = summarize(level, sorted(rows, key=lambda r: r.index), time.perf_counter() - started)
        summaries.append(summary)
        if on_level is not None:
            on_level(summary)
    return SanityReport(
        ok=all(s.bad == 0 for s in summaries),
        model=model,
        strict_cjk=strict_cjk,
        max_tokens=max_tokens,
        levels=summaries,
        evidence_path=str(evidence_path) if evidence_path else None,
    )


def read_evidence(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
