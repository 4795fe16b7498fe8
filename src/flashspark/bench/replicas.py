"""Per-replica results of a run through vLLM's router: how many requests each replica took, and
whether it was in the router's rotation before and after (a replica that died mid-run shows as out).

The router says which replica served what only in its Prometheus counters
(`vllm_router_policy_decisions_total{worker=...}`, `vllm_router_worker_health{worker=...}`); its
responses carry no replica header. The run reads them before and after, from the metrics URL that the
fleet's boot.json records.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from flashspark.client import OpenAIClient, Timeouts
from flashspark.client.metrics import per_label
from flashspark.errors import ClientError

ROUTER_TIMEOUTS = Timeouts(connect_s=3.0, stall_s=5.0)
ROUTED_METRICS_NOTE = (
    "through vllm-router: server-side counters (acceptance, KV usage) were not read, because the router "
    "answers /metrics from one replica at a time; `replicas` holds each replica's traffic"
)


class ReplicaTraffic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_url: str
    requests: float
    in_rotation_before: bool | None
    in_rotation_after: bool | None


class RouterSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: dict[str, float]
    health: dict[str, float]


# Counted once per request the policy placed (not the GETs it proxies: /metrics, /v1/models).
ROUTED = "vllm_router_policy_decisions_total"


def router_metrics_url(boot: dict[str, Any] | None) -> str | None:
    """The router's Prometheus URL when the target is a fleet FlashSpark started, else None."""
    router = (boot or {}).get("router")
    url = router.get("metrics_url") if isinstance(router, dict) else None
    return url if isinstance(url, str) else None


async def snapshot(metrics_url: str) -> RouterSnapshot | None:
    """The router's per-worker counters now; None when the router cannot be read (the run goes on)."""
    try:
        async with OpenAIClient(metrics_url.removesuffix("/metrics"), timeouts=ROUTER_TIMEOUTS) as client:
            text = await client.metrics_text()
        return RouterSnapshot(
            requests=per_label(text, ROUTED, "worker"),
            health=per_label(text, "vllm_router_worker_health", "worker"),
        )
    except (ClientError, ValueError):
        return None


def traffic(before: RouterSnapshot, after: RouterSnapshot) -> list[ReplicaTraffic]:
    """Requests each replica took between the two snapshots (a restarted router counts from zero)."""
    workers = sorted(set(before.requests) | set(after.requests) | set(after.health))
    rows = []
    for url in workers:
        start, end = before.requests.get(url, 0.0), after.requests.get(url, 0.0)
        rows.append(
            ReplicaTraffic(
                worker_url=url,
                requests=end - start if end >= start else end,
                in_rotation_before=before.health[url] >= 1 if url in before.health else None,
                in_rotation_after=after.health[url] >= 1 if url in after.health else None,
            )
        )
    return rows
