"""The typed shape of a cell's numbers: client side, server side, and the cell summary in results.json.

Every field defaults (to 0, None or empty), so a results.json written by an earlier version, or a
hand-made one, still reads; extra keys are refused, so a misspelt key is caught where it is made.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ClientStats(BaseModel):
    """Client-side statistics of a cell (or of one category in it); names follow `vllm bench serve`."""

    model_config = ConfigDict(extra="forbid")

    completed: int = 0
    failed: int = 0
    error_kinds: dict[str, int] = Field(default_factory=dict)
    duration: float = 0.0
    total_output_tokens: int = 0
    total_input_tokens: int = 0
    output_throughput: float = 0.0
    per_stream_decode_tokens_per_s_mean: float | None = None
    tokens_per_chunk_mean: float | None = None
    mean_ttft_ms: float | None = None
    median_ttft_ms: float | None = None
    p90_ttft_ms: float | None = None
    p99_ttft_ms: float | None = None
    mean_ttfo_ms: float | None = None
    median_ttfo_ms: float | None = None
    p90_ttfo_ms: float | None = None
    p99_ttfo_ms: float | None = None
    mean_ttfb_ms: float | None = None
    median_ttfb_ms: float | None = None
    p90_ttfb_ms: float | None = None
    p99_ttfb_ms: float | None = None
    mean_e2el_ms: float | None = None
    median_e2el_ms: float | None = None
    p90_e2el_ms: float | None = None
    p99_e2el_ms: float | None = None
    mean_decode_tokens_per_s: float | None = None
    median_decode_tokens_per_s: float | None = None
    p90_decode_tokens_per_s: float | None = None
    p99_decode_tokens_per_s: float | None = None
    mean_chunk_gap_ms: float | None = None
    median_chunk_gap_ms: float | None = None
    p90_chunk_gap_ms: float | None = None
    p99_chunk_gap_ms: float | None = None
    median_dispatch_delay_ms: float | None = None
    p99_dispatch_delay_ms: float | None = None
    max_dispatch_delay_ms: float | None = None
    p99_client_lateness_ms: float | None = None
    p99_queue_wait_ms: float | None = None


class ServerStats(BaseModel):
    """The server's side of a cell, from /metrics deltas (absent when /metrics could not be read)."""

    model_config = ConfigDict(extra="forbid")

    server_metrics: bool = False
    server_output_throughput: float | None = None
    server_generation_tokens: float | None = None
    spec_decode_num_drafts: float | None = None
    spec_decode_draft_tokens: float | None = None
    spec_decode_accepted_tokens: float | None = None
    spec_decode_acceptance_rate: float | None = None
    spec_decode_acceptance_length: float | None = None
    spec_decode_per_position_acceptance_rates: list[float] = Field(default_factory=list)
    prefix_cache_hit_rate: float | None = None
    kv_cache_usage_peak: float | None = None
    num_preemptions: float | None = None
    warnings: list[str] = Field(default_factory=list)


class CellSummary(ServerStats, ClientStats):
    """One measured cell: what it was, the client's numbers (also per category) and the server's."""

    cell: str
    shape: str = ""
    level: int | None = None
    round: int = 0
    requests: int = 0
    concurrency_cap: int | None = None
    per_category: dict[str, ClientStats] = Field(default_factory=dict)
    processes: int = Field(default=1, description="Client processes that ran this cell.")
    processes_reason: str | None = Field(default=None, description="How --processes auto chose that number.")
    stream_chunk_rate: float | None = Field(
        default=None, description="Chunks/s of one stream at warm-up: the pace the client calibration uses."
    )
    client_error_p99_ms: float | None = Field(
        default=None, description="The calibrated client timing error at this cell's streams per process."
    )
    client_limited: list[str] = Field(
        default_factory=list, description="Why the client, not the server, may have set this cell's numbers."
    )

    @classmethod
    def of(
        cls, meta: dict[str, Any], client: ClientStats, per_category: dict[str, ClientStats], server: ServerStats
    ) -> CellSummary:
        return cls.model_validate({**meta, **client.model_dump(), **server.model_dump(), "per_category": per_category})
