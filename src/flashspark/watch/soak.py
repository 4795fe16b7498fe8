"""`flashspark soak`: hours of agent-shaped traffic with every reply checked, the recipe's `soak.py` grown up.

N workers loop over six prompt kinds (tool turn, code, JSON, reasoning, long context, chat) with
random output lengths and temperatures; every reply goes through the garble detectors and the
recipe's short-body rule. One event line per problem, a heartbeat, a `/metrics` sample every few
seconds for the timeline, and canary rounds interleaved. It stops at its duration; a stop (Ctrl-C)
ends it early with everything so far kept: soak.jsonl is appended as it happens and soak.json is
rewritten at every heartbeat and at the end.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, ChatResult, OpenAIClient, thinking_off
from flashspark.files import write_json
from flashspark.gates import garble
from flashspark.gates.prompts import agent_prompt
from flashspark.gates.sanity import judge_reply
from flashspark.percentiles import percentile
from flashspark.pins import Pins
from flashspark.watch.canary import Canary, CanarySettings, Journal
from flashspark.watch.keeper import next_slot, stopped
from flashspark.watch.monitor import Sampler

SOAK_SCHEMA_VERSION = 1
SOAK_KINDS = ("tool_turn", "code", "json", "reason", "long_context", "chat")
# The recipe's short-body rule: fewer characters than this per billed token is a reply that lost its text.
MIN_CHARS_PER_TOKEN = 0.4
SHORT_BODY_MIN_TOKENS = 20  # below this a short reply is just short
EVIDENCE_CHARS = 400


class SoakOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(gt=0)
    concurrency: int = Field(default=4, ge=1, le=1024)
    max_tokens: tuple[int, ...] = Field(default=(300, 500, 800), min_length=1)
    temperatures: tuple[float, ...] = Field(default=(0.0, 0.3, 0.7), min_length=1)
    heartbeat_s: float = Field(default=300.0, gt=0)
    sample_s: float = Field(default=5.0, gt=0)
    canary_interval_s: float | None = Field(default=60.0, gt=0, description="None: no canary rounds.")
    seed: int | None = None


class SoakRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    worker: int
    kind: str
    t_s: float = Field(description="Seconds from the soak's start to the request's end.")
    max_tokens: int
    temperature: float
    ok: bool
    problems: list[str] = Field(default_factory=list)
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    decode_tokens_per_s: float | None = None


class SoakSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    t_s: float
    generation_tps: float | None = None
    prompt_tps: float | None = None
    kv_usage: float | None = None
    running: float | None = None
    waiting: float | None = None
    acceptance_rate: float | None = None
    ttft_p50_s: float | None = None
    preemptions: float | None = None
    health: str = "ok"


# The monitor's numbers a soak keeps for its timeline.
SAMPLED = set(SoakSample.model_fields) - {"t_s"}


class SoakSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SOAK_SCHEMA_VERSION
    base_url: str
    model: str | None
    options: SoakOptions
    started_at: str
    wall_s: float
    finished: bool = Field(description="False while running, or when stopped before its duration.")
    stopped_early: bool = False
    requests: int = 0
    ok: int = 0
    errors: int = 0
    degenerate: int = Field(default=0, description="Replies with at least one problem (errors not counted).")
    problems: dict[str, int] = Field(default_factory=dict, description="Problems per detector.")
    completion_tokens: int = 0
    aggregate_tokens_per_s: float | None = None
    per_stream_tokens_per_s_p50: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    canary_rounds: int = 0
    canary_failures: dict[str, int] = Field(default_factory=dict)
    canary_alerts: list[str] = Field(default_factory=list)
    pins: Pins = Field(default_factory=Pins)
    recipe: dict[str, Any] | None = None

    @property
    def healthy(self) -> bool:
        return self.errors == 0 and self.degenerate == 0 and not self.canary_alerts


EventKind = Literal["start", "request", "problem", "heartbeat", "sample", "canary", "stop"]


def soak_checks(result: ChatResult) -> list[garble.Hit]:
    """Every detector of the sanity gate, and the recipe's short-body rule."""
    hits = judge_reply(result, strict_cjk=False)
    tokens = result.completion_tokens or 0
    if tokens >= SHORT_BODY_MIN_TOKENS and len(result.content) / tokens < MIN_CHARS_PER_TOKEN:
        hits.append(garble.Hit("short_body", f"{len(result.content)} characters for {tokens} tokens"))
    return hits


class Soak:
    """One soak run: workers, sampler, canary and heartbeat around one shared record."""

    def __init__(
        self,
        client: OpenAIClient,
        options: SoakOptions,
        out_dir: Path,
        *,
        canary: CanarySettings | None = None,
        pins: Pins | None = None,
        recipe: dict[str, Any] | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.out_dir = out_dir
        self.journal = Journal(out_dir / "soak.jsonl", SOAK_SCHEMA_VERSION)
        self.canary_settings = canary
        self.on_event = on_event
        self.rng = random.Random(options.seed)
        self.rows: list[SoakRequest] = []
        self.canary: Canary | None = None
        self.model: str | None = None
        self.started = 0.0
        self.summary = SoakSummary(
            base_url=client.api,
            model=None,
            options=options,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            wall_s=0.0,
            finished=False,
            pins=pins or Pins(),
            recipe=recipe,
        )

    def event(self, name: EventKind, /, **details: Any) -> None:
        entry = self.journal.write(name, **details)
        if self.on_event is not None:
            self.on_event(name, entry)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self, stop: asyncio.Event | None = None) -> SoakSummary:
        stop = stop or asyncio.Event()
        self.started = time.monotonic()
        self.model = await self.client.default_model()
        self.summary.model = self.model
        self.event("start", base_url=self.client.api, model=self.model, options=self.options.model_dump(mode="json"))
        done = asyncio.Event()
        tasks = [asyncio.ensure_future(self._worker(w, done)) for w in range(self.options.concurrency)]
        side = [asyncio.ensure_future(self._sample(done)), asyncio.ensure_future(self._heartbeat(done))]
        if self.canary_settings is not None and self.options.canary_interval_s is not None:
            side.append(asyncio.ensure_future(self._canary(done)))
        ended_by_stop = False
        try:
            ended_by_stop = await stopped(stop, self.options.duration_s)
        finally:
            done.set()
            # Requests in flight at the end finish and count: a soak's last minute is as real as its first.
            if ended_by_stop:
                for task in tasks + side:
                    task.cancel()
            await asyncio.gather(*tasks, *side, return_exceptions=True)
            self.summary = self._summarize(finished=not ended_by_stop)
            self.event("stop", finished=self.summary.finished, requests=self.summary.requests)
            write_json(self.out_dir / "soak.json", self.summary.model_dump(mode="json"))
        return self.summary

    async def _worker(self, worker: int, done: asyncio.Event) -> None:
        while not done.is_set():
            kind = self.rng.choice(SOAK_KINDS)
            max_tokens = self.rng.choice(self.options.max_tokens)
            temperature = self.rng.choice(self.options.temperatures)
            prompt = agent_prompt(kind, run=f"soak{worker}", index=self.rng.randrange(1_000_000))
            result = await self.client.stream_chat(
                ChatRequest(
                    messages=prompt.messages,
                    model=self.model,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    extra=thinking_off(),
                )
            )
            self._judge(len(self.rows), worker, kind, max_tokens, temperature, result)  # numbered as they end

    def _judge(
        self, index: int, worker: int, kind: str, max_tokens: int, temperature: float, result: ChatResult
    ) -> SoakRequest:
        hits = [] if result.error is not None else soak_checks(result)
        decode = result.decode_tokens_per_s
        row = SoakRequest(
            index=index,
            worker=worker,
            kind=kind,
            t_s=round(self.now(), 3),
            max_tokens=max_tokens,
            temperature=temperature,
            ok=result.error is None and not hits,
            problems=[h.detector for h in hits],
            error=result.error,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttft_s=result.ttft_s,
            e2e_s=result.e2e_s,
            decode_tokens_per_s=round(decode, 2) if decode is not None else None,
        )
        self.rows.append(row)
        self.event("request", **row.model_dump(mode="json"))
        if result.error is not None or hits:
            self.event(
                "problem",
                index=index,
                kind=kind,
                temperature=temperature,
                error=result.error,
                detectors=[{"detector": h.detector, "detail": h.detail} for h in hits],
                content=result.content[:EVIDENCE_CHARS],
            )
        return row

    async def _sample(self, done: asyncio.Event) -> None:
        sampler = Sampler(self.client, deployment="soak")
        next_start = time.monotonic()
        while not done.is_set():
            serving = (await sampler.sample()).serving
            sample = SoakSample(t_s=round(self.now(), 3), **serving.model_dump(include=SAMPLED))
            self.event("sample", **sample.model_dump(mode="json"))
            next_start = next_slot(next_start, self.options.sample_s, time.monotonic())
            if await stopped(done, next_start - time.monotonic()):
                return

    async def _heartbeat(self, done: asyncio.Event) -> None:
        while not await stopped(done, self.options.heartbeat_s):
            self.summary = self._summarize(finished=False)
            write_json(self.out_dir / "soak.json", self.summary.model_dump(mode="json"))
            s = self.summary
            self.event(
                "heartbeat",
                requests=s.requests,
                errors=s.errors,
                degenerate=s.degenerate,
                completion_tokens=s.completion_tokens,
                aggregate_tokens_per_s=s.aggregate_tokens_per_s,
            )

    async def _canary(self, done: asyncio.Event) -> None:
        assert self.canary_settings is not None and self.options.canary_interval_s is not None
        self.canary = Canary(
            self.client, self.canary_settings, Journal(self.out_dir / "canary.jsonl"), model=self.model
        )
        while not await stopped(done, self.options.canary_interval_s):
            results = await self.canary.round()
            self.event(
                "canary",
                round=self.canary.state.rounds - 1,
                failing=[r.probe for r in results if r.ok is False],
                alerts=self.canary.state.alerts,
            )

    def _summarize(self, *, finished: bool) -> SoakSummary:
        rows = list(self.rows)
        wall = self.now()
        tokens = sum(r.completion_tokens or 0 for r in rows)
        ttfts = [r.ttft_s for r in rows if r.ttft_s is not None]
        decodes = [r.decode_tokens_per_s for r in rows if r.decode_tokens_per_s is not None]
        problems = Counter(p for r in rows for p in r.problems)
        canary = self.canary
        return self.summary.model_copy(
            update={
                "wall_s": round(wall, 3),
                "finished": finished,
                "stopped_early": not finished and wall < self.options.duration_s,
                "requests": len(rows),
                "ok": sum(r.ok for r in rows),
                "errors": sum(r.error is not None for r in rows),
                "degenerate": sum(bool(r.problems) for r in rows),
                "problems": dict(problems),
                "completion_tokens": tokens,
                "aggregate_tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
                "per_stream_tokens_per_s_p50": round(statistics.median(decodes), 2) if decodes else None,
                "ttft_p50_s": _rounded(percentile(ttfts, 50), 3),
                "ttft_p95_s": _rounded(percentile(ttfts, 95), 3),
                "canary_rounds": canary.state.rounds if canary else 0,
                "canary_failures": canary.state.failures() if canary else {},
                "canary_alerts": [a["probe"] for a in canary.raised] if canary else [],
            }
        )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def read_soak(run_dir: Path) -> tuple[SoakSummary, list[dict[str, Any]]]:
    """soak.json and the events of soak.jsonl (a partial last line, from a crash, skipped)."""
    import json

    summary = SoakSummary.model_validate(json.loads((run_dir / "soak.json").read_text()))
    events = []
    for line in (run_dir / "soak.jsonl").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return summary, events
