"""The speculative-decoding gate: drafts happened, and every draft position accepted something.

From `/metrics` deltas over the gate's own traffic (copy-style prompts, which
any working drafter can speed up): drafts > 0, the mean acceptance length
within [1, k + 1], and every position 0..k-1 accepted at least once — the
recipe's "MTP positions 0..4 active".
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict

from flashspark.client import ChatRequest, OpenAIClient, parse_metrics, thinking_off

SPECULATIVE_SCHEMA_VERSION = 1

_COPY_ITEMS = "\n".join(f"{i}. the quick brown fox jumps over the lazy dog number {i}" for i in range(1, 25))
COPY_PROMPT = f"Copy the following list exactly, line by line, and nothing else:\n{_COPY_ITEMS}"


class SpeculativeReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SPECULATIVE_SCHEMA_VERSION
    status: str  # "pass" | "fail" | "skip"
    reasons: list[str]
    num_speculative_tokens: int | None
    requests: int
    request_errors: int
    drafts: float
    draft_tokens: float
    accepted_tokens: float
    acceptance_rate: float | None
    mean_acceptance_length: float | None
    per_position_rates: list[float]

    @property
    def ok(self) -> bool:
        return self.status != "fail"


async def run_speculative_gate(
    client: OpenAIClient,
    *,
    model: str | None = None,
    num_speculative_tokens: int | None = None,
    expected: bool = True,
    requests: int = 2,
    max_tokens: int = 200,
) -> SpeculativeReport:
    """Send copy-style requests and judge the spec-decode counter deltas.

    `num_speculative_tokens` (k) defaults to the number of positions the server
    exposes. With `expected` False, a server without speculative counters is a
    skip, not a failure.
    """
    model = model or await client.default_model()
    before = parse_metrics(await client.metrics_text())
    request = ChatRequest(
        model=model,
        messages=[{"role": "user", "content": COPY_PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        extra=thinking_off(),
    )
    results = await asyncio.gather(*(client.stream_chat(request) for _ in range(requests)))
    after = parse_metrics(await client.metrics_text())
    stats = after.minus(before).spec_decode
    k = num_speculative_tokens or (len(after.per_position) or None)
    rates = stats.per_position_rates
    reasons: list[str] = []
    errors = sum(r.error is not None for r in results)
    if errors:
        reasons.append(f"{errors} of {requests} requests failed")
    if not after.per_position and not stats.drafts:
        status = "fail" if expected else "skip"
        reasons.append("the server exposes no speculative-decoding counters")
    else:
        if stats.drafts <= 0:
            reasons.append("no drafts during the gate's traffic")
        length = stats.mean_acceptance_length
        if length is not None and k is not None and not 1 <= length <= k + 1:
            reasons.append(f"mean acceptance length {length:.2f} outside [1, {k + 1}]")
        if k is not None:
            idle = stats.silent_positions(k)
            if idle:
                reasons.append(f"draft positions {idle} accepted nothing")
        status = "fail" if reasons else "pass"
    return SpeculativeReport(
        status=status,
        reasons=reasons,
        num_speculative_tokens=k,
        requests=requests,
        request_errors=errors,
        drafts=stats.drafts,
        draft_tokens=stats.draft_tokens,
        accepted_tokens=stats.accepted_tokens,
        acceptance_rate=stats.acceptance_rate,
        mean_acceptance_length=stats.mean_acceptance_length,
        per_position_rates=rates,
    )
