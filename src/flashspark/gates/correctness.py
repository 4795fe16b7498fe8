"""The correctness gate (`flashspark correctness`): a deterministic victim must not change under churn.

The victim (temperature 0, a fixed long answer) runs alone for a reference,
then again while other traffic churns the batch:

- `condense`: several threads of short requests that finish fast, so vLLM keeps
  condensing the running batch (the path where DSpark's per-row draft state
  was once read by the wrong request);
- `staggered`: arrivals spaced apart, so prefill and decode steps mix (the
  ragged-batch path).

Any byte of difference fails, with the first differing offset and a window of
both texts. The speculative acceptance over the churn window must also stay
above a floor, because a proposer whose state got mixed up still produces
correct text (the target verifies) but its acceptance collapses to ~0.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, ConfigDict

from flashspark.client import ChatRequest, OpenAIClient, parse_metrics, thinking_off
from flashspark.errors import InputError
from flashspark.gates.options import CHURN_MODES

CORRECTNESS_SCHEMA_VERSION = 1
MODES = CHURN_MODES

# Per drafter: DSpark collapses to ~0 when its per-request draft state is mixed
# up, while healthy churn windows measured 0.30-0.64 in the recipe (its tiny-churn
# run read 0.299 with byte-identical output, so its 0.4 cut false-fails); 0.2
# separates the two. ngram drafting has no per-request proposer state to corrupt
# and its acceptance only measures how much the text repeats itself: reported,
# not gated.
ACCEPTANCE_FLOORS: dict[str, float | None] = {"dspark": 0.2, "mtp": 0.2, "eagle": 0.2, "eagle3": 0.2, "ngram": None}

VICTIM_PROMPT = (
    "List the first 60 prime numbers, one per line, in the form 'n: prime' (for example '1: 2'). No commentary."
)
CHURN_PROMPT = "Say a short greeting."
WINDOW = 40


class Divergence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int
    reference_window: str
    victim_window: str


class ModeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str
    identical: bool
    divergence: Divergence | None
    victim_error: str | None
    churn_requests: int
    churn_errors: int
    drafts: float
    acceptance_rate: float | None
    acceptance_floor: float | None
    acceptance_ok: bool
    window_s: float

    @property
    def ok(self) -> bool:
        return self.identical and self.victim_error is None and self.acceptance_ok


class CorrectnessReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = CORRECTNESS_SCHEMA_VERSION
    ok: bool
    model: str | None
    reference_chars: int
    reference_error: str | None
    modes: list[ModeResult]


def first_difference(reference: str, other: str) -> Divergence | None:
    """None when identical; else the first differing offset with a window of both texts."""
    if reference == other:
        return None
    offset = next(
        (i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a != b), min(len(reference), len(other))
    )
    start = max(0, offset - WINDOW)
    return Divergence(
        offset=offset, reference_window=reference[start : offset + WINDOW], victim_window=other[start : offset + WINDOW]
    )


def default_floor(method: str | None) -> float | None:
    if method is None:
        return None
    return ACCEPTANCE_FLOORS.get(method, 0.2)


def victim_request(model: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[{"role": "user", "content": VICTIM_PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        extra=thinking_off(ignore_eos=True),
    )


def churn_request(model: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[{"role": "user", "content": CHURN_PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        extra=thinking_off(),
    )


async def run_correctness(
    client: OpenAIClient,
    *,
    model: str | None = None,
    modes: tuple[str, ...] = MODES,
    victim_tokens: int = 220,
    churn_threads: int = 6,
    churn_tokens: int = 16,
    staggered_requests: int = 8,
    stagger_s: float = 0.4,
    lead_s: float = 1.0,
    acceptance_floor: float | None = None,
) -> CorrectnessReport:
    """Reference alone, then the victim under each churn mode. Never raises for a failed request."""
    model = model or await client.default_model()
    victim = victim_request(model, victim_tokens)
    churn = churn_request(model, churn_tokens)
    await client.stream_chat(churn)  # warm-up, as the recipe's test does
    reference = await client.stream_chat(victim)
    results: list[ModeResult] = []
    for mode in modes:
        before = parse_metrics(await client.metrics_text())
        started = time.perf_counter()
        if mode == "condense":
            victim_result, churn_results = await _condense(client, victim, churn, churn_threads, lead_s)
        elif mode == "staggered":
            victim_result, churn_results = await _staggered(client, victim, churn, staggered_requests, stagger_s)
        else:
            raise InputError(
                f"unknown churn mode {mode!r}", key="--mode", value=mode, fix=f"use one of {', '.join(MODES)}"
            )
        window_s = time.perf_counter() - started
        stats = parse_metrics(await client.metrics_text()).minus(before).spec_decode
        floor = acceptance_floor
        acceptance = stats.acceptance_rate
        acceptance_ok = floor is None or (acceptance is not None and acceptance >= floor)
        divergence = None if victim_result.error else first_difference(reference.content, victim_result.content)
        results.append(
            ModeResult(
                mode=mode,
                identical=victim_result.error is None and divergence is None,
                divergence=divergence,
                victim_error=victim_result.error,
                churn_requests=len(churn_results),
                churn_errors=sum(r.error is not None for r in churn_results),
                drafts=stats.drafts,
                acceptance_rate=acceptance,
                acceptance_floor=floor,
                acceptance_ok=acceptance_ok,
                window_s=window_s,
            )
        )
    return CorrectnessReport(
        ok=reference.error is None and all(r.ok for r in results),
        model=model,
        reference_chars=len(reference.content),
        reference_error=reference.error,
        modes=results,
    )


async def _condense(client: OpenAIClient, victim: ChatRequest, churn: ChatRequest, threads: int, lead_s: float):  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    churn_results = []

    async def churner() -> None:
        while not stop.is_set():
            churn_results.append(await client.stream_chat(churn))

    workers = [asyncio.create_task(churner()) for _ in range(threads)]
    try:
        await asyncio.sleep(lead_s)
        victim_result = await client.stream_chat(victim)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    return victim_result, churn_results


async def _staggered(client: OpenAIClient, victim: ChatRequest, churn: ChatRequest, count: int, gap_s: float):  # type: ignore[no-untyped-def]
    tasks = []
    victim_at = count // 2
    for index in range(count):
        tasks.append(asyncio.create_task(client.stream_chat(victim if index == victim_at else churn)))
        await asyncio.sleep(gap_s)
    results = await asyncio.gather(*tasks)
    return results[victim_at], [r for i, r in enumerate(results) if i != victim_at]
