"""What the monitor shows: one versioned snapshot of a deployment, computed from two `/metrics` reads.

Counters become rates over the window between the reads; histograms become that window's
percentiles (Prometheus's `histogram_quantile` on bucket deltas), so a number on screen is
about the last few seconds, not the deployment's lifetime.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client.metrics import (
    GENERATION_TOKENS,
    ITL,
    KV_USAGE,
    PREEMPTIONS,
    PROMPT_TOKENS,
    RUNNING,
    TTFT,
    WAITING,
    MetricsSnapshot,
)

MONITOR_SCHEMA_VERSION = 1

EngineState = Literal["running", "exited", "unknown"]
Health = Literal["ok", "failing", "unreachable"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeView(Model):
    node: str
    rank: int
    engine: EngineState
    detail: str | None = None
    last_log: str | None = Field(default=None, description="The engine log's last line (secrets masked).")


class ServingView(Model):
    """The head's `/metrics` over one window (None: not exposed, or nothing happened in the window)."""

    health: Health
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = Field(default=None, description="0..1, vLLM's kv_cache_usage_perc.")
    prompt_tps: float | None = None
    generation_tps: float | None = None
    preemptions: float | None = Field(default=None, description="Preemptions in the window.")
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None
    per_position: list[float] = Field(default_factory=list, description="Acceptance by draft position.")
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None


class CanaryView(Model):
    """The latest canary round, as `watch` journaled it."""

    t: float
    ok: bool
    failing: list[str] = Field(default_factory=list, description="Probes that failed in the latest round.")
    alerts: list[str] = Field(default_factory=list, description="Probes whose failures in a row raised an alert.")


class MonitorSnapshot(Model):
    schema_version: int = MONITOR_SCHEMA_VERSION
    t: float = Field(description="Unix time of the second read.")
    window_s: float | None = Field(description="Seconds between the two reads (None on the first).")
    deployment: str
    base_url: str
    nodes: list[NodeView] = Field(default_factory=list)
    serving: ServingView
    canary: CanaryView | None = None
    error: str | None = None


def serving_view(before: MetricsSnapshot | None, after: MetricsSnapshot, window_s: float | None) -> ServingView:
    """Gauges from `after`; rates, acceptance and percentiles from `after - before` over `window_s`."""
    view = ServingView(
        health="ok",
        running=after.gauges.get(RUNNING),
        waiting=after.gauges.get(WAITING),
        kv_usage=after.gauges.get(KV_USAGE),
    )
    if before is None or not window_s or window_s <= 0:
        return view
    delta = after.minus(before)
    spec = delta.spec_decode
    view.prompt_tps = delta.counter(PROMPT_TOKENS) / window_s
    view.generation_tps = delta.counter(GENERATION_TOKENS) / window_s
    view.preemptions = delta.counter(PREEMPTIONS)
    view.acceptance_rate = spec.acceptance_rate
    view.mean_acceptance_length = spec.mean_acceptance_length
    view.per_position = spec.per_position_rates if spec.drafts else []
    view.ttft_p50_s = delta.quantile(TTFT, 0.50)
    view.ttft_p95_s = delta.quantile(TTFT, 0.95)
    view.ttft_p99_s = delta.quantile(TTFT, 0.99)
    view.itl_p50_s = delta.quantile(ITL, 0.50)
    view.itl_p99_s = delta.quantile(ITL, 0.99)
    return view
