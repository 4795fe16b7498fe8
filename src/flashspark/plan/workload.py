"""Workload fit: do these live requests fit the shared KV pool at once?

The pool is shared and allocated on demand: `max_model_len` and
`max_num_seqs` are ceilings, not reservations. A decoding request holds its
context's full-attention pages plus a small fixed state (sliding windows and
compressor states); a request in chunked prefill transiently holds the window
groups' pages for a whole chunk on top. So:

    used = sum_i (full pages(L_i) + decode state) + one prefill chunk's transient

Verdicts: "fits" below 80 % of the pool, "at the limit" up to 100 % (a boot's
pool swings by up to ~16 % and the transient is an estimate), else the
requests past the pool queue or are preempted, in arrival order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from flashspark.errors import RecipeError
from flashspark.plan.layouts import KVLayout

AT_LIMIT_SHARE = 0.80
NULL_BLOCKS = 1
_ITEM = re.compile(r"^\s*(?P<count>\d+)\s*[xX*]\s*(?P<size>\d+(?:\.\d+)?)\s*(?P<unit>[kKmM]i?)?\s*$")
_UNITS = {
    None: 1,
    "k": 1_000,
    "K": 1_000,
    "ki": 1024,
    "Ki": 1024,
    "m": 1_000_000,
    "M": 1_000_000,
    "mi": 1 << 20,
    "Mi": 1 << 20,
}


@dataclass(frozen=True)
class RequestShape:
    count: int
    tokens: int
    label: str


def parse_workload(spec: str) -> list[RequestShape]:
    """`6x50k,2x1M` (k = 1,000, M = 10^6, Ki/Mi binary) or `@file` with one item per line.

    Requests longer than max_model_len are reported and counted at max_model_len.
    """
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise RecipeError(f"cannot read workload file {path}", where=str(path), fix="check the path") from exc
        items = [line.split("#")[0] for line in text.splitlines()]
    else:
        items = spec.split(",")
    shapes = []
    for item in (i for i in items if i.strip()):
        match = _ITEM.match(item)
        if match is None:
            raise RecipeError(
                f"cannot read workload item {item.strip()!r}",
                key="--workload",
                value=item.strip(),
                fix="write COUNTxTOKENS items such as 6x50k,2x1M",
            )
        tokens = int(float(match["size"]) * _UNITS[match["unit"]])
        shapes.append(RequestShape(int(match["count"]), tokens, item.strip()))
    if not shapes:
        raise RecipeError("the workload is empty", key="--workload", fix="write items such as 6x50k,2x1M")
    return shapes


@dataclass(frozen=True)
class WorkloadFit:
    verdict: str  # fits | at the limit | does not fit
    pool_blocks: int
    used_blocks: int
    steady_blocks: int
    transient_blocks: int
    fixed_blocks_per_request: int
    live_tokens: int
    requests: int
    admitted: int
    over_max_model_len: list[str]
    over_max_num_seqs: int

    @property
    def used_share(self) -> float:
        return self.used_blocks / self.pool_blocks if self.pool_blocks else float("inf")

    @property
    def left_blocks(self) -> int:
        return self.pool_blocks - self.used_blocks


def fit_workload(
    layout: KVLayout,
    shapes: list[RequestShape],
    *,
    pool_blocks: int,
    max_model_len: int,
    max_num_seqs: int | None,
    prefill_chunk_tokens: int,
) -> WorkloadFit:
    """Place every request (in order) into the shared pool and judge the result."""
    full = [g for g in layout.groups if g.window is None]
    windows = [g for g in layout.groups if g.window is not None]
    # Decoding holds each window group's window only; a prefill chunk holds window + chunk.
    fixed = sum(g.pages_for(max_model_len, 1) for g in windows)
    transient = sum(g.pages_for(max_model_len, prefill_chunk_tokens) for g in windows) - fixed
    over_len = [s.label for s in shapes if s.tokens > max_model_len]
    flat = [min(s.tokens, max_model_len) for s in shapes for _ in range(s.count)]
    # vLLM's BlockPool keeps one null block (for padding) that no request ever gets: count it as used.
    used = transient + NULL_BLOCKS
    admitted = 0
    steady = 0

    def need(tokens: int) -> int:
        """Blocks a decoding request of `tokens` holds: its context in every full group, its windows."""
        return sum(g.pages_for(tokens) for g in full) + fixed

    for tokens in flat:
        blocks = need(tokens)
        if used + blocks > pool_blocks:
            break
        used += blocks
        steady += blocks
        admitted += 1
    if admitted == len(flat):
        share = used / pool_blocks if pool_blocks else float("inf")
        verdict = "fits" if share < AT_LIMIT_SHARE else "at the limit"
    else:
        used = transient + NULL_BLOCKS + sum(need(t) for t in flat)
        verdict = "does not fit"
    seqs_over = max(0, len(flat) - max_num_seqs) if max_num_seqs else 0
    return WorkloadFit(
        verdict=verdict,
        pool_blocks=pool_blocks,
        used_blocks=used,
        steady_blocks=steady if admitted == len(flat) else used - transient - NULL_BLOCKS,
        transient_blocks=transient,
        fixed_blocks_per_request=fixed,
        live_tokens=sum(flat),
        requests=len(flat),
        admitted=admitted,
        over_max_model_len=over_len,
        over_max_num_seqs=seqs_over,
    )
