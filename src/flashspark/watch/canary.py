"""Canaries: small probes a live deployment must keep passing, journaled one event per probe.

A round runs the exact smoke, one agent-shaped prompt through the garble detectors, the
acceptance check over the `/metrics` delta since the previous round (the floor, and every draft
position still accepting), and every N-th round a long decode. A probe that fails
`failures_to_alert` rounds in a row raises one alert (journaled once per streak, exported as a
metric); its first pass after that journals `recovered`. Probe load is counted, so the cost of
watching is known: requests and tokens per hour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, OpenAIClient, parse_metrics, thinking_off
from flashspark.client.metrics import MetricsSnapshot
from flashspark.errors import ClientError
from flashspark.files import append_event
from flashspark.gates.longdecode import run_longdecode
from flashspark.gates.prompts import agent_prompt
from flashspark.gates.sanity import judge_reply
from flashspark.gates.smoke import listed_model, run_smoke
from flashspark.recipe.model import Recipe

CANARY_SCHEMA_VERSION = 1
PROBES = ("smoke", "agent", "acceptance", "longdecode")
ProbeName = Literal["smoke", "agent", "acceptance", "longdecode"]
# Drafts in a window below which a silent position is noise, not a stopped position.
MIN_DRAFTS_FOR_POSITIONS = 20
EVIDENCE_CHARS = 600


class CanarySettings(BaseModel):
    """One watch's settings, resolved from the recipe's `[watch]` and flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(gt=0)
    longdecode_every: int = Field(ge=1)
    longdecode_tokens: int = Field(ge=16)
    longdecode_window_tokens: int = Field(ge=8)
    failures_to_alert: int = Field(ge=1)
    acceptance_floor: float | None = Field(default=None, ge=0, le=1)
    num_speculative_tokens: int | None = None
    agent_max_tokens: int = Field(ge=8)

    @classmethod
    def of(cls, recipe: Recipe, **overrides: Any) -> CanarySettings:
        watch = recipe.watch
        values: dict[str, Any] = {
            "interval_s": watch.interval_s,
            "longdecode_every": watch.longdecode_every,
            "longdecode_tokens": min(watch.longdecode_tokens, recipe.gates.longdecode_tokens),
            "longdecode_window_tokens": recipe.gates.longdecode_window_tokens,
            "failures_to_alert": watch.failures_to_alert,
            "acceptance_floor": recipe.acceptance_floor,
            "num_speculative_tokens": recipe.speculative.num_speculative_tokens if recipe.speculative.enabled else None,
            "agent_max_tokens": watch.agent_max_tokens,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ProbeResult(BaseModel):
    """One probe's outcome. `ok` None: skipped (nothing to judge), which neither fails nor passes a streak."""

    model_config = ConfigDict(extra="forbid")

    probe: ProbeName
    ok: bool | None
    detail: str
    requests: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    evidence: dict[str, Any] = Field(default_factory=dict)


@dataclass
class ProbeStreak:
    runs: int = 0
    failures: int = 0
    in_a_row: int = 0
    alerting: bool = False
    last_ok: bool | None = None


@dataclass
class CanaryState:
    """What the exporter and the monitor read: per-probe counts and streaks, load, the latest round."""

    streaks: dict[str, ProbeStreak] = field(default_factory=lambda: {p: ProbeStreak() for p in PROBES})
    rounds: int = 0
    requests: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.time)
    last_round_t: float | None = None
    last_failing: list[str] = field(default_factory=list)
    engines: dict[tuple[str, int], bool] = field(default_factory=dict)
    health_ok: bool | None = None

    @property
    def alerts(self) -> list[str]:
        return [p for p, s in self.streaks.items() if s.alerting]

    def failures(self) -> dict[str, int]:
        """Failed runs per probe, for the probes that failed at all."""
        return {p: s.failures for p, s in self.streaks.items() if s.failures}

    def per_hour(self) -> dict[str, float]:
        hours = max(time.time() - self.started, 1e-9) / 3600
        return {"requests_per_hour": self.requests / hours, "tokens_per_hour": self.tokens / hours}


class Journal:
    """A versioned JSONL journal (canary.jsonl, soak.jsonl): every line carries the schema version."""

    def __init__(self, path: Path, schema_version: int = CANARY_SCHEMA_VERSION) -> None:
        self.path = path
        self.schema_version = schema_version
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **details: Any) -> dict[str, Any]:
        return append_event(self.path, event, schema_version=self.schema_version, **details)


def latest_round(path: Path, *, tail_bytes: int = 65_536) -> dict[str, Any] | None:
    """The last `round` event of a journal (None: no journal or no round yet). Reads only the file's tail."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - tail_bytes))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a partial first line of the tail
        if isinstance(entry, dict) and entry.get("event") == "round":
            return entry
    return None


class Canary:
    """Runs rounds of probes against one API and keeps the journal and the state."""

    def __init__(
        self,
        client: OpenAIClient,
        settings: CanarySettings,
        journal: Journal,
        *,
        model: str | None = None,
        node_check: Callable[[], Awaitable[dict[tuple[str, int], bool]]] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.journal = journal
        self.model = model
        self.node_check = node_check
        self.state = CanaryState()
        self.raised: list[dict[str, Any]] = []  # every alert journaled, in order
        self._last_metrics: MetricsSnapshot | None = None

    async def round(self) -> list[ProbeResult]:
        """One round: every due probe in turn, each journaled; streaks and alerts updated."""
        state = self.state
        index = state.rounds
        if self.node_check is not None:
            state.engines = await self.node_check()
        state.health_ok = await self._health()
        # The acceptance window runs from the previous round's end; only the first round starts it here.
        window_start = self._last_metrics or await self._metrics()
        self.model = self.model or await listed_model(self.client)
        probes = [self._smoke, self._agent]
        if index % self.settings.longdecode_every == self.settings.longdecode_every - 1:
            probes.append(self._longdecode)
        results = []
        for probe in probes:  # each journaled as it ends, so its time is its own
            results.append(await probe())
            self._count(index, results[-1])
        end_metrics = await self._metrics()
        results.append(self._acceptance(window_start, end_metrics))
        self._count(index, results[-1])
        if end_metrics is not None:
            self._last_metrics = end_metrics
        state.rounds += 1
        state.last_round_t = time.time()
        failing = state.last_failing = [r.probe for r in results if r.ok is False]
        self.journal.write(
            "round",
            round=index,
            ok=not failing,
            failing=failing,
            alerts=state.alerts,
            engines={f"{node}/{rank}": up for (node, rank), up in state.engines.items()},
            health_ok=state.health_ok,
            load=state.per_hour() | {"requests": state.requests, "tokens": state.tokens},
        )
        return results

    def _count(self, index: int, result: ProbeResult) -> None:
        state = self.state
        state.requests += result.requests
        state.tokens += result.tokens
        self.journal.write("probe", round=index, **result.model_dump(mode="json"))
        if result.ok is None:
            return
        streak = state.streaks[result.probe]
        streak.runs += 1
        streak.last_ok = result.ok
        if result.ok:
            if streak.alerting:
                self.journal.write("recovered", probe=result.probe, round=index, after=streak.in_a_row)
            streak.in_a_row, streak.alerting = 0, False
            return
        streak.failures += 1
        streak.in_a_row += 1
        if streak.in_a_row >= self.settings.failures_to_alert and not streak.alerting:
            streak.alerting = True
            self.raised.append(
                self.journal.write(
                    "alert", probe=result.probe, round=index, failures_in_a_row=streak.in_a_row, detail=result.detail
                )
            )

    async def _health(self) -> bool:
        try:
            return await self.client.health() == 200
        except ClientError:
            return False

    async def _metrics(self) -> MetricsSnapshot | None:
        try:
            return parse_metrics(await self.client.metrics_text())
        except (ClientError, ValueError):
            return None

    async def _smoke(self) -> ProbeResult:
        started = time.monotonic()
        report = await run_smoke(self.client, concurrency=1, model=self.model)
        request = report.requests[0]
        return ProbeResult(
            probe="smoke",
            ok=report.ok,
            detail="exact reply" if report.ok else (request.error or "wrong reply"),
            requests=1,
            tokens=request.completion_tokens or 0,
            wall_s=round(time.monotonic() - started, 3),
            evidence={"expect": report.expect, "content": request.content[:EVIDENCE_CHARS], "ttft_s": request.ttft_s},
        )

    async def _agent(self) -> ProbeResult:
        started = time.monotonic()
        prompt = agent_prompt("tool_turn", run=f"canary{self.state.rounds}", index=0)
        result = await self.client.stream_chat(
            ChatRequest(
                messages=prompt.messages,
                model=self.model,
                max_tokens=self.settings.agent_max_tokens,
                temperature=0.0,
                extra=thinking_off(),
            )
        )
        hits = judge_reply(result, strict_cjk=False)
        if result.error is not None:
            ok, detail = False, f"request failed: {result.error}"
        elif hits:
            ok, detail = False, "; ".join(f"{h.detector}: {h.detail}" for h in hits)[:300]
        else:
            ok, detail = True, "clean reply"
        return ProbeResult(
            probe="agent",
            ok=ok,
            detail=detail,
            requests=1,
            tokens=(result.prompt_tokens or 0) + (result.completion_tokens or 0),
            wall_s=round(time.monotonic() - started, 3),
            evidence={
                "content": result.content[:EVIDENCE_CHARS],
                "finish_reason": result.finish_reason,
                "completion_tokens": result.completion_tokens,
                "detectors": [h.detector for h in hits],
            },
        )

    def _acceptance(self, before: MetricsSnapshot | None, after: MetricsSnapshot | None) -> ProbeResult:
        if before is None or after is None:
            return ProbeResult(probe="acceptance", ok=False, detail="/metrics could not be read")
        return judge_acceptance(
            before, after, floor=self.settings.acceptance_floor, k=self.settings.num_speculative_tokens
        )

    async def _longdecode(self) -> ProbeResult:
        started = time.monotonic()
        report = await run_longdecode(
            self.client,
            tokens=self.settings.longdecode_tokens,
            concurrency=1,
            window_tokens=self.settings.longdecode_window_tokens,
            model=self.model,
        )
        stream = report.streams[0]
        return ProbeResult(
            probe="longdecode",
            ok=report.ok,
            detail="every window clean" if report.ok else "; ".join(stream.problems)[:300],
            requests=1,
            tokens=stream.completion_tokens or 0,
            wall_s=round(time.monotonic() - started, 3),
            evidence={"stream": stream.model_dump(mode="json")},
        )


def judge_acceptance(
    before: MetricsSnapshot, after: MetricsSnapshot, *, floor: float | None, k: int | None
) -> ProbeResult:
    """The acceptance rate over the window against the floor, and every draft position still accepting.

    No drafts in the window (no speculative decoding, or nothing to draft) is a skip.
    """
    spec = after.minus(before).spec_decode
    evidence = {
        "drafts": spec.drafts,
        "draft_tokens": spec.draft_tokens,
        "accepted_tokens": spec.accepted_tokens,
        "acceptance_rate": spec.acceptance_rate,
        "per_position": spec.per_position_rates,
        "floor": floor,
    }
    if spec.drafts <= 0 or spec.acceptance_rate is None:
        return ProbeResult(probe="acceptance", ok=None, detail="no drafts in the window", evidence=evidence)
    problems = []
    if floor is not None and spec.acceptance_rate < floor:
        problems.append(f"acceptance {spec.acceptance_rate:.1%} below the floor {floor:.0%}")
    if k is not None and spec.drafts >= MIN_DRAFTS_FOR_POSITIONS:
        stopped = spec.silent_positions(k)
        if stopped:
            problems.append(f"draft positions {stopped} accepted nothing in {spec.drafts:.0f} drafts")
    detail = "; ".join(problems) or f"acceptance {spec.acceptance_rate:.1%} over {spec.drafts:.0f} drafts"
    return ProbeResult(probe="acceptance", ok=not problems, detail=detail, evidence=evidence)
