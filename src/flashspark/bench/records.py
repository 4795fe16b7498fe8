"""Per-request records and per-cell statistics, with the definitions users mean.

Per request:
- `ttfb_s` first byte, `ttft_s` first token of any kind (reasoning included),
  `ttfo_s` first answer (content) token, `e2e_s` end to end;
- `request_id` the server's id for it (the chunks' `id`: vLLM's log names it);
- `started_at` Unix time it was sent; the `*_s` times are seconds from then;
- `scheduled_s` when the load shape meant to send it (seconds from the cell's start) and
  `dispatch_delay_s` how much later it was sent: `queue_wait_s` of it waiting for the cell's
  concurrency cap (the shape's own queueing, where coordinated omission hides), the rest the
  client's lateness (its event loop busy with other streams);
- `output_tokens` from the server's `usage`, never from chunk counts;
- `decode_tokens_per_s` = (N - 1) / (t_last - t_first): per token, so a chunk
  carrying several speculative tokens counts as several;
- the chunk gaps and tokens per chunk are kept apart and named as such
  (`chunk_gap_*`, `tokens_per_chunk`): vLLM bench serve's "ITL" is this chunk gap.

Failed requests are counted and their error kinds tallied; they never enter
latency or rate statistics.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from pydantic import BaseModel, ConfigDict

from flashspark.bench.stats import ClientStats
from flashspark.client import ChatResult
from flashspark.percentiles import percentile


class RequestRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cell: str
    category: str
    index: int
    request_id: str | None = None
    started_at: float
    prompt_tokens: int | None
    output_tokens: int | None
    ttfb_s: float | None
    ttft_s: float | None
    ttfo_s: float | None
    e2e_s: float | None
    decode_tokens_per_s: float | None
    chunks: int
    tokens_per_chunk: float | None
    chunk_gaps_s: list[float]
    finish_reason: str | None
    error: str | None
    error_kind: str | None
    scheduled_s: float | None = None
    dispatch_delay_s: float | None = None
    queue_wait_s: float | None = None


def record_from(
    result: ChatResult,
    *,
    cell: str,
    category: str,
    index: int,
    scheduled_s: float | None = None,
    dispatch_delay_s: float | None = None,
    queue_wait_s: float | None = None,
) -> RequestRecord:
    times = result.chunk_times_s
    gaps = [b - a for a, b in itertools.pairwise(times)]
    tokens = result.completion_tokens
    # Built from a ChatResult that pydantic already validated: constructing without a second
    # validation halves the cost paid on the timing event loop as each request finishes.
    return RequestRecord.model_construct(
        cell=cell,
        category=category,
        index=index,
        request_id=result.request_id,
        started_at=result.started_at,
        prompt_tokens=result.prompt_tokens,
        output_tokens=tokens,
        ttfb_s=result.ttfb_s,
        ttft_s=result.ttft_s,
        ttfo_s=result.ttfo_s,
        e2e_s=result.e2e_s,
        decode_tokens_per_s=result.decode_tokens_per_s,
        chunks=len(times),
        tokens_per_chunk=tokens / len(times) if tokens and times else None,
        chunk_gaps_s=[round(g, 6) for g in gaps],
        finish_reason=result.finish_reason,
        error=result.error,
        error_kind=result.error_kind,
        scheduled_s=scheduled_s,
        dispatch_delay_s=None if dispatch_delay_s is None else round(dispatch_delay_s, 6),
        queue_wait_s=None if queue_wait_s is None else round(queue_wait_s, 6),
    )


def distribution(values: list[float], *, scale: float = 1.0) -> dict[str, float | None]:
    scaled = [v * scale for v in values]
    return {
        "mean": statistics.fmean(scaled) if scaled else None,
        "p50": percentile(scaled, 50),
        "p90": percentile(scaled, 90),
        "p99": percentile(scaled, 99),
    }


def cell_statistics(records: list[RequestRecord], duration_s: float) -> ClientStats:
    """Client-side statistics of one cell; names follow `vllm bench serve` where the meaning is the same."""
    ok = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    kinds: dict[str, int] = {}
    for r in failed:
        kinds[r.error_kind or "unknown"] = kinds.get(r.error_kind or "unknown", 0) + 1
    output = sum(r.output_tokens or 0 for r in ok)
    decode = [r.decode_tokens_per_s for r in ok if r.decode_tokens_per_s is not None]
    gaps = [g for r in ok for g in r.chunk_gaps_s]
    per_chunk = [r.tokens_per_chunk for r in ok if r.tokens_per_chunk is not None]
    stats: dict[str, Any] = {
        "completed": len(ok),
        "failed": len(failed),
        "error_kinds": kinds,
        "duration": duration_s,
        "total_output_tokens": output,
        "total_input_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "output_throughput": output / duration_s if duration_s > 0 else 0.0,
        "per_stream_decode_tokens_per_s_mean": statistics.fmean(decode) if decode else None,
        "tokens_per_chunk_mean": statistics.fmean(per_chunk) if per_chunk else None,
    }
    for name, values in (
        ("ttft", [r.ttft_s for r in ok]),
        ("ttfo", [r.ttfo_s for r in ok]),
        ("ttfb", [r.ttfb_s for r in ok]),
        ("e2el", [r.e2e_s for r in ok]),
    ):
        present = [v for v in values if v is not None]
        for key, value in distribution(present, scale=1000).items():
            stats[f"{'median' if key == 'p50' else key}_{name}_ms"] = value
    for key, value in distribution(decode).items():
        stats[f"{'median' if key == 'p50' else key}_decode_tokens_per_s"] = value
    for key, value in distribution(gaps, scale=1000).items():
        stats[f"{'median' if key == 'p50' else key}_chunk_gap_ms"] = value
    # Failed requests were dispatched too: lateness is the client's, whatever the server answered.
    delays = [r.dispatch_delay_s for r in records if r.dispatch_delay_s is not None]
    late = [r.dispatch_delay_s - (r.queue_wait_s or 0.0) for r in records if r.dispatch_delay_s is not None]
    waits = [r.queue_wait_s for r in records if r.queue_wait_s is not None]
    delay_ms = distribution(delays, scale=1000)
    stats["median_dispatch_delay_ms"] = delay_ms["p50"]
    stats["p99_dispatch_delay_ms"] = delay_ms["p99"]
    stats["max_dispatch_delay_ms"] = max(delays) * 1000 if delays else None
    stats["p99_client_lateness_ms"] = distribution(late, scale=1000)["p99"]
    stats["p99_queue_wait_ms"] = distribution(waits, scale=1000)["p99"]
    return ClientStats.model_validate(stats)
