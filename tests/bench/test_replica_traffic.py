"""Per-replica counts from the router's Prometheus text (the sample lines as vllm-router 0.1.17 writes them)."""

from __future__ import annotations

from flashspark.bench.replicas import RouterSnapshot, router_metrics_url, traffic
from flashspark.client.metrics import per_label

A, B = "http://10.9.0.11:8888", "http://10.9.0.12:8888"
TEXT = f"""# TYPE vllm_router_processed_requests_total counter
vllm_router_processed_requests_total{{worker="{B}"}} 7
vllm_router_processed_requests_total{{worker="{A}"}} 12
vllm_router_worker_health{{worker="{B}"}} 0
vllm_router_worker_health{{worker="{A}"}} 1
vllm_router_worker_health_checks_total{{worker="{A}"}} 50
vllm_router_policy_decisions_total{{policy="round_robin",worker="{A}"}} 10
vllm_router_policy_decisions_total{{policy="round_robin",worker="{B}"}} 4
"""


def test_samples_are_keyed_by_worker_and_other_families_ignored() -> None:
    assert per_label(TEXT, "vllm_router_processed_requests_total", "worker") == {A: 12.0, B: 7.0}
    assert per_label(TEXT, "vllm_router_worker_health", "worker") == {A: 1.0, B: 0.0}
    assert per_label(TEXT, "vllm_router_processed_requests_total", "policy") == {}
    assert per_label(TEXT, "vllm_router_policy_decisions_total", "worker") == {A: 10.0, B: 4.0}


def test_traffic_is_the_difference_and_a_replica_that_died_shows_out_of_rotation() -> None:
    before = RouterSnapshot(requests={A: 10, B: 5}, health={A: 1, B: 1})
    after = RouterSnapshot(requests={A: 30, B: 6}, health={A: 1, B: 0})
    rows = {row.worker_url: row for row in traffic(before, after)}
    assert (rows[A].requests, rows[A].in_rotation_after) == (20, True)
    assert (rows[B].requests, rows[B].in_rotation_before, rows[B].in_rotation_after) == (1, True, False)
    # a router restarted between the snapshots counts from zero: its count, never a negative one
    restarted = traffic(before, RouterSnapshot(requests={A: 3}, health={A: 1}))
    assert [(r.worker_url, r.requests) for r in restarted] == [(A, 3), (B, 0)]


def test_only_a_fleet_boot_record_names_a_router() -> None:
    assert router_metrics_url({"router": {"metrics_url": "http://h:29000/metrics"}}) == "http://h:29000/metrics"
    assert router_metrics_url({"evidence": {}}) is None and router_metrics_url(None) is None
    assert router_metrics_url({"router": "not a table"}) is None
