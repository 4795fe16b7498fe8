"""`flashspark bench sessions`: simulated agents whose context grows turn by turn, and what the cache does.

An agent harness does not send independent prompts: each turn resends the whole conversation
(system prompt, task, every earlier reply and tool result) plus what is new. A server with a prefix
cache should prefill only the new part, so time to first token should stay near flat as the context
grows. This bench measures that: N agents share one system prompt (a fleet shares its instructions
and tool definitions), each has its own task, and every turn appends the agent's previous reply and a
tool result of `growth_tokens` before asking again.

The agents advance in lockstep: turn t of every agent is sent together, and turn t+1 starts when the
last of them has finished (plus the think time). That makes the server's own prefix-cache counters
(/metrics, read before and after each turn) attributable to one turn, so the hit rate per turn is
the server's number, not an estimate. The system prompt starts with a salt unique to the run, so the
first turn is cold and later hits are this run's own.

Writes sessions.json (versioned, with the shape, the resolved recipe and pins) into the run
directory, rewritten after every turn, and one JSONL line per request as it finishes.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tomllib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flashspark.bench.depth import median_of_present
from flashspark.bench.options import SessionShape
from flashspark.client import ChatRequest, ChatResult, OpenAIClient, parse_metrics
from flashspark.client.metrics import PREFIX_HITS, PREFIX_QUERIES
from flashspark.errors import ClientError, InputError
from flashspark.files import append_line, write_json
from flashspark.gates.prompts import WORDS
from flashspark.pins import Pins

SESSIONS_SCHEMA_VERSION = 1


def words(count: int, seed: int) -> str:
    """`count` plain words (about one token each), varied by `seed` so agents and turns differ."""
    return " ".join(WORDS[(seed * 31 + i * 7 + i // len(WORDS)) % len(WORDS)] for i in range(count))


def system_prompt(salt: str, tokens: int) -> str:
    return f"{salt} You are a coding agent. Use the tool results you are given. Notes: {words(tokens, 0)}"


def task_message(agent: int, tokens: int) -> str:
    return f"Agent {agent}: your task is to review these records and report what changed. {words(tokens, agent + 1)}"


def tool_result_message(agent: int, turn: int, tokens: int) -> str:
    return (
        f"Tool result for agent {agent}, step {turn}: {words(tokens, agent * 101 + turn + 7)}\n"
        "Continue with the next step."
    )


def load_shape(path: Path | None, **overrides: Any) -> SessionShape:
    """The shape from a TOML file (keys at the top or under [session]) with the given values over it."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"cannot read the session shape: {exc}", where=str(path), fix="give a TOML file") from exc
        values = data.get("session", data)
    values |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return SessionShape.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise InputError(
            f"session shape: {key}: {first['msg']}",
            key=key,
            value=first.get("input"),
            where=str(path) if path is not None else None,
            fix=f"known keys: {', '.join(SessionShape.model_fields)}",
        ) from None


class TurnRecord(BaseModel):
    """One agent's request at one turn."""

    model_config = ConfigDict(extra="forbid")

    agent: int
    turn: int
    ok: bool
    error: str | None = None
    prompt_tokens: int | None = Field(default=None, description="What the server billed: the whole context so far.")
    completion_tokens: int | None = None
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    e2e_s: float | None = None


class TurnRow(BaseModel):
    """Every agent's request at one turn, and the server's prefix-cache counters across the turn."""

    model_config = ConfigDict(extra="forbid")

    turn: int
    requests: int
    ok: int
    prompt_tokens_mean: float | None = Field(description="Mean context billed per request at this turn.")
    ttft_p50_s: float | None
    ttft_max_s: float | None
    decode_tokens_per_s_p50: float | None
    prefix_cache_queries: float | None = Field(description="Prompt tokens the cache was asked about (/metrics).")
    prefix_cache_hits: float | None = Field(description="Of those, tokens found cached (/metrics).")

    @property
    def hit_rate(self) -> float | None:
        if not self.prefix_cache_queries or self.prefix_cache_hits is None:
            return None
        return self.prefix_cache_hits / self.prefix_cache_queries


class SessionsResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SESSIONS_SCHEMA_VERSION
    kind: str = "sessions"
    created_at: str
    base_url: str
    model: str
    shape: SessionShape
    turns: list[TurnRow]
    records: list[TurnRecord]
    wall_s: float
    pins: Pins
    recipe: dict[str, Any] | None = None

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.records)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and len(self.records) == self.shape.agents * self.shape.turns


class _Agent:
    """One simulated agent: its conversation so far."""

    def __init__(self, index: int, system: str, shape: SessionShape) -> None:
        self.index = index
        self.shape = shape
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": task_message(index, shape.task_tokens)},
        ]

    def request(self, model: str) -> ChatRequest:
        return ChatRequest(
            messages=list(self.messages),
            model=model,
            max_tokens=self.shape.output_tokens,
            temperature=0.0,
            extra={"min_tokens": self.shape.output_tokens},  # every turn adds the same decode
        )

    def after(self, turn: int, result: ChatResult) -> None:
        """Append this turn's reply and the next tool result: the context the next turn resends."""
        reply = result.content or "(no answer)"
        self.messages.append({"role": "assistant", "content": reply})
        tool_result = tool_result_message(self.index, turn, self.shape.growth_tokens)
        self.messages.append({"role": "user", "content": tool_result})


async def run_sessions(
    client: OpenAIClient,
    *,
    shape: SessionShape,
    run_dir: Path,
    model: str | None = None,
    recipe: dict[str, Any] | None = None,
    pins: Pins | None = None,
    on_turn: Callable[[TurnRow], None] | None = None,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> SessionsResults:
    """Run every agent's turns in lockstep and write sessions.json after each turn."""
    served = model or await client.default_model()
    run_dir.mkdir(parents=True, exist_ok=True)
    system = system_prompt(f"Run {uuid.uuid4().hex[:8]}.", shape.system_tokens)
    agents = [_Agent(i, system, shape) for i in range(shape.agents)]
    all_pins = Pins(vllm_version=await client.version(), served_model=served).under(pins)
    rows: list[TurnRow] = []
    records: list[TurnRecord] = []
    started = asyncio.get_running_loop().time()

    def results() -> SessionsResults:
        return SessionsResults(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            base_url=client.api,
            model=served,
            shape=shape,
            turns=rows,
            records=records,
            wall_s=round(asyncio.get_running_loop().time() - started, 3),
            pins=all_pins,
            recipe=recipe,
        )

    for turn in range(shape.turns):
        if turn and shape.think_time_s:
            await sleep(shape.think_time_s)
        before = await _prefix_counters(client)
        answers = await asyncio.gather(*(client.stream_chat(agent.request(served)) for agent in agents))
        after = await _prefix_counters(client)
        turn_records = [_record(agent.index, turn, answer) for agent, answer in zip(agents, answers, strict=True)]
        with open(run_dir / "sessions.jsonl", "a", encoding="utf-8") as handle:
            for record in turn_records:
                append_line(handle, record.model_dump_json())
        for agent, answer in zip(agents, answers, strict=True):
            agent.after(turn, answer)
        records.extend(turn_records)
        row = _row(turn, turn_records, before, after)
        rows.append(row)
        write_json(run_dir / "sessions.json", results().model_dump(mode="json"))
        if on_turn is not None:
            on_turn(row)
    final = results()
    write_json(run_dir / "sessions.json", final.model_dump(mode="json"))
    return final


def _record(agent: int, turn: int, result: ChatResult) -> TurnRecord:
    return TurnRecord(
        agent=agent,
        turn=turn,
        ok=result.ok,
        error=result.error,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        ttft_s=round(result.ttft_s, 4) if result.ttft_s is not None else None,
        decode_tokens_per_s=round(result.decode_tokens_per_s, 2) if result.decode_tokens_per_s is not None else None,
        e2e_s=round(result.e2e_s, 4) if result.e2e_s is not None else None,
    )


async def _prefix_counters(client: OpenAIClient) -> tuple[float, float] | None:
    """(queries, hits) in tokens from vLLM's /metrics; None where the server has none."""
    try:
        snapshot = parse_metrics(await client.metrics_text())
    except ClientError:
        return None
    if PREFIX_QUERIES not in snapshot.counters:
        return None
    return snapshot.counter(PREFIX_QUERIES), snapshot.counter(PREFIX_HITS)


def _row(
    turn: int, records: list[TurnRecord], before: tuple[float, float] | None, after: tuple[float, float] | None
) -> TurnRow:
    billed = [r.prompt_tokens for r in records if r.prompt_tokens is not None]
    ttfts = [r.ttft_s for r in records if r.ttft_s is not None]
    queries, hits = (after[0] - before[0], after[1] - before[1]) if before and after else (None, None)
    return TurnRow(
        turn=turn,
        requests=len(records),
        ok=sum(r.ok for r in records),
        prompt_tokens_mean=round(statistics.fmean(billed), 1) if billed else None,
        ttft_p50_s=median_of_present([*ttfts]),
        ttft_max_s=max(ttfts) if ttfts else None,
        decode_tokens_per_s_p50=median_of_present([r.decode_tokens_per_s for r in records]),
        prefix_cache_queries=queries,
        prefix_cache_hits=hits,
    )


def read_sessions(run_dir: Path) -> SessionsResults:
    return SessionsResults.model_validate(json.loads((run_dir / "sessions.json").read_text()))


__all__ = ["SessionsResults", "TurnRecord", "TurnRow", "load_shape", "read_sessions", "run_sessions"]
