"""SLO prediction: p50/p95 time to first token and per-stream decode for a declared traffic, before it runs.

The inputs are measured, not assumed: two ladders taken on the deployment (`bench.ladders` reads them
from a `bench depth` run and a `bench static` run), and the recipe's scheduler knobs.

- **Prefill against depth** (`bench depth`, one cold request at a time): T(d), the seconds a prompt of
  d tokens takes to its first token alone. T is piecewise linear through the measured points (and 0 at
  0), extended past the last point along its last segment, so a chunk taking a prompt from p to p + c
  tokens costs T(p + c) - T(p): the cost per token grows with depth as attention does.
- **Decode against concurrency** (`bench static`, one run per prompt length): s(b), one stream's
  tokens/s when b streams decode together, and g(b), the tokens one engine step yields per stream (the
  measured mean acceptance length; 1 without speculation). One step with b decoders costs g(b) / s(b),
  past the last level with the aggregate held flat. The context matters as much as the batch (8 streams
  at 544 tokens decoded at 6 tok/s here where 8 at 160 did 27), so with ladders at two or more prompt
  lengths the step time is interpolated between their contexts; past the longest, each stream's extra
  context costs kappa seconds per token, the slope of the depth run's single-stream step time g / d1(L).

The traffic (the same arrival schedule the bench sends, `Traffic.arrivals`) is then replayed through a
model of vLLM's scheduler: the client holds requests past its concurrency cap; the engine admits
waiting requests up to `max_num_seqs`; each step every running decoder takes 1 + k tokens of the
`max_num_batched_tokens` budget and the rest goes to prefill chunks in arrival order (chunked prefill);
the step costs the decode step plus its chunks; a request's first token comes at the end of the step
that finishes its prompt. That is where queueing behind chunked prefill shows: a prompt that arrives
behind others waits for their chunks, and every decoder's step grows by the chunks sharing it.

What it leaves out, and so where it is wrong: the KV pool (preemption when the pool runs out: `plan`
checks the fit separately), the prefix cache (bench prompts are salted), batch efficiency of prefill
beyond what one prompt shows (several prompts in one step are costed as separate prompts), and any
change of speculative acceptance with content. The bench run with `--predicted` measures the error.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.errors import InputError
from flashspark.percentiles import percentile
from flashspark.recipe.model import Recipe
from flashspark.recipe.workload import Traffic, Workload

LADDERS_SCHEMA_VERSION = 1
PREDICTION_SCHEMA_VERSION = 1
#: The most request-steps (one request's part in one engine step) a replay may take. A step's work is its
#: running requests, so this bounds the replay's time (a fraction of a second here), however large the
#: declared traffic: counting steps alone let 4,096 streams of 16M-token replies run for minutes.
MAX_REQUEST_STEPS = 2_000_000


class PrefillPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int = Field(ge=1, description="Prompt tokens as the server billed them.")
    ttft_s: float = Field(gt=0, description="Median time to first token, alone and cold.")
    decode_tokens_per_s: float | None = Field(default=None, gt=0, description="One stream's decode at this depth.")


class DecodePoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(ge=1)
    context_tokens: float = Field(ge=0, description="The mean context its streams decoded at: prompt + reply / 2.")
    per_stream_decode_tokens_per_s: float = Field(gt=0, description="Median over rounds of the cell mean.")
    tokens_per_step: float = Field(default=1.0, ge=1, description="Mean acceptance length (1 without drafts).")
    acceptance_by_position: list[float] = Field(default_factory=list)


class Ladders(BaseModel):
    """What the predictor stands on: measured on one deployment, with the knobs it was measured with."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = LADDERS_SCHEMA_VERSION
    prefill: list[PrefillPoint] = Field(min_length=1)
    decode: list[DecodePoint] = Field(min_length=1, description="One or more ladders, each at its own context.")
    measured_with: dict[str, Any] = Field(
        default_factory=dict, description="model, num_speculative_tokens, ... of the deployment measured."
    )
    sources: list[str] = Field(default_factory=list, description="The run directories read.")


class SchedulerKnobs(BaseModel):
    """The recipe's settings the simulation follows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    num_speculative_tokens: int = Field(default=0, ge=0)
    model: str | None = None

    @classmethod
    def of(cls, recipe: Recipe) -> SchedulerKnobs:
        """The recipe's scheduler settings; one it leaves to vLLM cannot be simulated (vLLM picks it per
        platform and usage), so it is refused with the fix."""
        engine = recipe.engine
        for name, value in (
            ("max_num_seqs", engine.max_num_seqs),
            ("max_num_batched_tokens", engine.max_num_batched_tokens),
        ):
            if value is None:
                raise InputError(
                    f"the recipe leaves {name} to vLLM's default: the simulation needs the value the engine uses",
                    key=f"engine.{name}",
                    fix=f"set it, e.g. --set {name.upper()}=...",
                )
        spec = recipe.speculative
        return cls(
            max_num_seqs=engine.max_num_seqs or 1,
            max_num_batched_tokens=engine.max_num_batched_tokens or 1,
            num_speculative_tokens=(spec.num_speculative_tokens or 0) if spec.enabled else 0,
            model=recipe.model.id,
        )


class TtftParts(BaseModel):
    """Where the mean predicted TTFT goes."""

    model_config = ConfigDict(extra="forbid")

    waiting_for_a_slot_s: float = Field(description="Sent, not yet admitted: max_num_seqs were running.")
    own_prefill_s: float = Field(description="The prompt's own chunks.")
    behind_others_s: float = Field(description="Other prompts' chunks and decode steps in the same steps.")


class SloPrediction(BaseModel):
    """The predicted SLOs of one declared traffic on one recipe (versioned: it is kept beside the run that
    measures it)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = PREDICTION_SCHEMA_VERSION
    kind: str = "slo-prediction"
    workload: Workload
    knobs: SchedulerKnobs
    ladders: Ladders
    requests: int
    ttft_p50_s: float
    ttft_p95_s: float
    per_stream_decode_tokens_per_s: float = Field(description="Mean over requests of (N - 1) / (last - first).")
    output_tokens_per_s: float = Field(description="All output tokens over the round's span (first send to last).")
    round_s: float
    ttft_parts: TtftParts
    warnings: list[str] = Field(default_factory=list)
    method: str = "scheduler replay over measured ladders (plan/slo.py)"


# -- the ladders as functions ---------------------------------------------------------------------------


def _interpolate(points: list[tuple[float, float]], x: float) -> float:
    """Piecewise linear through sorted (x, y) points; flat before the first, along the last segment after."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if len(points) == 1:
        return points[-1][1]
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return y1 + (y1 - y0) * (x - x1) / (x1 - x0)


Ladder = list[tuple[int, float, float]]  # (concurrency, per-stream tok/s, tokens per step), by concurrency


@dataclass(frozen=True)
class Speeds:
    """The ladders as the simulation asks them, at one workload context."""

    prefill: list[tuple[float, float]]  # (tokens, cumulative seconds), from (0, 0)
    decode: list[tuple[float, Ladder]]  # (context tokens, its ladder), by context
    context_tokens: float
    s_per_context_token: float  # what one more context token costs one stream's step (kappa)

    @classmethod
    def of(cls, ladders: Ladders, context_tokens: float) -> Speeds:
        cumulative, latest = [(0.0, 0.0)], 0.0
        for tokens, seconds in sorted({p.tokens: p.ttft_s for p in ladders.prefill}.items()):
            latest = max(latest, seconds)  # a longer prompt never costs less: noise made it look so
            cumulative.append((float(tokens), latest))
        by_context: dict[float, Ladder] = {}
        for p in ladders.decode:
            by_context.setdefault(p.context_tokens, []).append(
                (p.concurrency, p.per_stream_decode_tokens_per_s, p.tokens_per_step)
            )
        decode = [(context, sorted(levels)) for context, levels in sorted(by_context.items())]
        return cls(cumulative, decode, context_tokens, _context_cost(ladders, decode[0][0], decode[0][1][0][2]))

    def prefill_s(self, start: int, end: int) -> float:
        """Seconds to take a prompt from `start` to `end` tokens: never negative, however the ladder bends."""
        return max(0.0, _interpolate(self.prefill, end) - _interpolate(self.prefill, start))

    def decode_step(self, streams: int) -> tuple[float, float]:
        """(seconds, tokens per stream) of one engine step with `streams` decoders at the workload's context:
        between two ladders' contexts, interpolated; below the first, the first's; past the last, the
        last's plus each stream's extra context at kappa."""
        context = self.context_tokens
        steps = [(c, *_ladder_step(ladder, streams)) for c, ladder in self.decode]
        if context >= steps[-1][0]:
            last_context, seconds, per_stream = steps[-1]
            return seconds + streams * (context - last_context) * self.s_per_context_token, per_stream
        seconds = _interpolate([(c, t) for c, t, _ in steps], context)  # flat below the first ladder
        return seconds, _interpolate([(c, g) for c, _, g in steps], context)


def _ladder_step(levels: Ladder, streams: int) -> tuple[float, float]:
    """(seconds, tokens per stream) of one step with `streams` decoders on one ladder; past its top level
    the aggregate is held flat."""
    top_level, top_rate, top_step = levels[-1]
    if streams > top_level:
        return top_step / (top_rate * top_level / streams), top_step
    rate = _interpolate([(c, r) for c, r, _ in levels], streams)
    step = _interpolate([(c, g) for c, _, g in levels], streams)
    return step / rate, step


def _context_cost(ladders: Ladders, ladder_context: float, tokens_per_step: float) -> float:
    """Seconds one more context token adds to one stream's step: the least-squares slope of the depth
    run's single-stream step time (tokens per step / decode rate) against depth, over the depths at or
    past the first decode ladder's context (shorter prompts give the n-gram drafter too little to match,
    so their decode rate is the drafter's, not the context's). 0 when fewer than two depths qualify."""
    points = [
        (float(p.tokens), tokens_per_step / p.decode_tokens_per_s)
        for p in ladders.prefill
        if p.decode_tokens_per_s and p.tokens >= ladder_context
    ]
    if len(points) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in points) / spread) if spread else 0.0


# -- the scheduler replay --------------------------------------------------------------------------------


@dataclass
class SimRequest:
    index: int
    arrival: float
    sent: float = 0.0
    admitted: float | None = None
    prefilled: int = 0
    own_prefill_s: float = 0.0
    first: float | None = None
    generated: float = 0.0
    last: float | None = None


@dataclass
class _Engine:
    traffic: Traffic
    knobs: SchedulerKnobs
    speeds: Speeds
    waiting: deque[SimRequest] = field(default_factory=deque)
    running: list[SimRequest] = field(default_factory=list)

    def step(self, now: float) -> tuple[float, list[SimRequest]]:
        """Run one engine step from `now`; return its end and the requests it finished."""
        while self.waiting and len(self.running) < self.knobs.max_num_seqs:
            admitted = self.waiting.popleft()
            admitted.admitted = now
            self.running.append(admitted)
        prompt = self.traffic.input_tokens
        decoders = [r for r in self.running if r.prefilled >= prompt]
        budget = self.knobs.max_num_batched_tokens - len(decoders) * (1 + self.knobs.num_speculative_tokens)
        cost, per_stream = self.speeds.decode_step(len(decoders)) if decoders else (0.0, 0.0)
        chunks = []
        for r in self.running:
            if budget <= 0:
                break
            if r.prefilled < prompt:
                size = min(prompt - r.prefilled, budget)
                seconds = self.speeds.prefill_s(r.prefilled, r.prefilled + size)
                r.own_prefill_s += seconds
                cost += seconds
                chunks.append((r, size))
                budget -= size
        end = now + cost
        finished = []
        for r in decoders:
            r.generated += per_stream
            if r.generated >= self.traffic.output_tokens:
                r.last = end
                finished.append(r)
        for r, size in chunks:
            r.prefilled += size
            if r.prefilled >= prompt:
                r.first, r.generated = end, 1.0
                if self.traffic.output_tokens <= 1:
                    r.last = end
                    finished.append(r)
        self.running = [r for r in self.running if r.last is None]
        return end, finished


def simulate(traffic: Traffic, knobs: SchedulerKnobs, speeds: Speeds) -> list[SimRequest]:
    """Replay one round of the traffic through the scheduler model; every request ends with its times."""
    requests = [SimRequest(i, a) for i, a in enumerate(traffic.arrivals())]
    pending = deque(requests)
    cap = traffic.concurrency if traffic.shape == "rate" else len(requests)
    free_slots = [0.0] * cap  # when each of the client's slots last became free
    engine = _Engine(traffic, knobs, speeds)
    now, done, work = 0.0, 0, 0
    while done < len(requests):
        while pending and pending[0].arrival <= now and free_slots and free_slots[0] <= now:
            request = pending.popleft()
            request.sent = max(request.arrival, heapq.heappop(free_slots))
            engine.waiting.append(request)
        if not engine.running and not engine.waiting:
            now = max(pending[0].arrival, free_slots[0])  # idle until the next send
            continue
        work += len(engine.running)
        now, finished = engine.step(now)
        for _ in finished:
            heapq.heappush(free_slots, now)
        done += len(finished)
        _refuse_past_the_bound(work)
    return requests


def _refuse_past_the_bound(request_steps: int) -> None:
    if request_steps > MAX_REQUEST_STEPS:
        raise InputError(
            f"the traffic needs more than {MAX_REQUEST_STEPS:,} request-steps to replay",
            key="--workload",
            fix="declare fewer requests, shorter prompts or replies, or a larger max_num_batched_tokens",
        )


def predict_slo(workload: Workload, knobs: SchedulerKnobs, ladders: Ladders) -> SloPrediction:
    """The predicted TTFT percentiles and per-stream decode of `workload`'s traffic under `knobs`."""
    traffic = workload.traffic
    speeds = Speeds.of(ladders, traffic.input_tokens + traffic.output_tokens / 2)
    done = simulate(traffic, knobs, speeds)
    ttfts = [(r.first or 0.0) - r.sent for r in done]
    decode = [
        (traffic.output_tokens - 1) / (r.last - r.first)
        for r in done
        if r.first is not None and r.last is not None and r.last > r.first
    ]
    span = max(r.last or 0.0 for r in done) - min(r.sent for r in done)
    waits = [(r.admitted or r.sent) - r.sent for r in done]
    own = [r.own_prefill_s for r in done]
    p50, p95 = percentile(ttfts, 50), percentile(ttfts, 95)
    assert p50 is not None and p95 is not None  # a workload has at least one request
    return SloPrediction(
        workload=workload,
        knobs=knobs,
        ladders=ladders,
        requests=len(done),
        ttft_p50_s=round(p50, 4),
        ttft_p95_s=round(p95, 4),
        per_stream_decode_tokens_per_s=round(statistics.fmean(decode), 3) if decode else 0.0,
        output_tokens_per_s=round(traffic.output_tokens * len(done) / span, 3) if span > 0 else 0.0,
        round_s=round(span, 3),
        ttft_parts=TtftParts(
            waiting_for_a_slot_s=round(statistics.fmean(waits), 4),
            own_prefill_s=round(statistics.fmean(own), 4),
            behind_others_s=round(statistics.fmean(ttfts) - statistics.fmean(waits) - statistics.fmean(own), 4),
        ),
        warnings=_mismatches(workload, knobs, ladders),
    )


def _mismatches(workload: Workload, knobs: SchedulerKnobs, ladders: Ladders) -> list[str]:
    """Where the ladders were measured on something else than what is predicted: the numbers carry over
    only as far as the deployment is the same."""
    warnings = []
    measured = ladders.measured_with
    for name, value in (("model", knobs.model), ("num_speculative_tokens", knobs.num_speculative_tokens)):
        if name in measured and value is not None and measured[name] != value:
            warnings.append(
                f"the ladders were measured with {name} {measured[name]!r}, the recipe has {value!r}: "
                "measure the ladders on this deployment"
            )
    traffic = workload.traffic
    deepest = max(p.tokens for p in ladders.prefill)
    if traffic.input_tokens > deepest:
        warnings.append(
            f"prompts of {traffic.input_tokens:,} tokens are past the prefill ladder's deepest point "
            f"({deepest:,}): the cost is extrapolated"
        )
    top = max(p.concurrency for p in ladders.decode)
    if min(traffic.in_flight, knobs.max_num_seqs) > top:
        warnings.append(
            f"up to {min(traffic.in_flight, knobs.max_num_seqs)} streams decode at once, past the decode "
            f"ladder's top level ({top}): the aggregate is held flat beyond it"
        )
    return warnings
