"""Prometheus and Grafana as parts of the plan: scrape config, recording and alerting rules, a dashboard
with the speculative-decoding panels, and (when the cluster file asks for monitoring) compose services
that run Prometheus and Grafana beside the head.

Everything runs on the head and listens on loopback: vLLM's /metrics through the API address the head
probes, FlashSpark's canary exporter (`flashspark watch`) on `watch.exporter_port`. Grafana has no admin
secret to render: anonymous read-only viewers on 127.0.0.1 (reach it through an SSH tunnel).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from flashspark.recipe.model import Recipe
from flashspark.render.addresses import probe_host
from flashspark.render.compose import LABEL_PREFIX

PROMETHEUS_IMAGE = "prom/prometheus:v2.53.2"
GRAFANA_IMAGE = "grafana/grafana:11.2.0"
VLLM_JOB = "vllm"
EXPORTER_JOB = "flashspark"
# Drafts in the rule's window below which a silent position is noise (as the canary judges it).
POSITION_MIN_DRAFTS = 20


class MonitoringFiles(BaseModel):
    """The rendered monitoring parts, as data; `files()` gives their text per file name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prometheus: dict[str, Any]
    rules: dict[str, Any]
    dashboard: dict[str, Any]

    def files(self) -> dict[str, str]:
        return {
            "prometheus.yml": yaml.safe_dump(self.prometheus, sort_keys=False),
            "rules.yml": yaml.safe_dump(self.rules, sort_keys=False, width=1000),
            "grafana-dashboard.json": json.dumps(self.dashboard, indent=2) + "\n",
        }


def scrape_targets(recipe: Recipe) -> dict[str, str]:
    """job -> host:port, as the head reaches them."""
    return {
        VLLM_JOB: f"{probe_host(recipe.api.host)}:{recipe.api.port}",
        EXPORTER_JOB: f"127.0.0.1:{recipe.watch.exporter_port}",
    }


def prometheus_config(
    recipe: Recipe, *, rules_path: str = "rules.yml", scrape_interval_s: float = 15, evaluation_interval_s: float = 15
) -> dict[str, Any]:
    """prometheus.yml: both jobs labelled with the deployment and profile, the rules file loaded."""
    labels = {"deployment": recipe.cluster.name, "profile": recipe.profile.name}
    return {
        "global": {
            "scrape_interval": f"{scrape_interval_s:g}s",
            "evaluation_interval": f"{evaluation_interval_s:g}s",
        },
        "rule_files": [rules_path],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target], "labels": dict(labels)}]}
            for job, target in scrape_targets(recipe).items()
        ],
    }


def alert_rules(recipe: Recipe, *, hold: str = "1m") -> dict[str, Any]:
    """Recording rules for the panels, and the alerts: engine down, /health failing, KV usage near full,
    preemptions rising, acceptance below the floor, a draft position that stopped accepting, canary
    failures. `hold` is each alert's `for:` (tests shorten it)."""
    watch = recipe.watch
    recording = [
        _record("flashspark:generation_tokens:rate1m", "sum(rate(vllm:generation_tokens_total[1m]))"),
        _record("flashspark:prompt_tokens:rate1m", "sum(rate(vllm:prompt_tokens_total[1m]))"),
        _record(
            "flashspark:acceptance_rate:5m",
            "sum(increase(vllm:spec_decode_num_accepted_tokens_total[5m]))"
            " / sum(increase(vllm:spec_decode_num_draft_tokens_total[5m]))",
        ),
        _record(
            "flashspark:mean_acceptance_length:5m",
            "1 + sum(increase(vllm:spec_decode_num_accepted_tokens_total[5m]))"
            " / sum(increase(vllm:spec_decode_num_drafts_total[5m]))",
        ),
        _record(
            "flashspark:acceptance_by_position:5m",
            "sum by (position) (increase(vllm:spec_decode_num_accepted_tokens_per_pos_total[5m]))"
            " / ignoring(position) group_left sum(increase(vllm:spec_decode_num_drafts_total[5m]))",
        ),
        _record(
            "flashspark:ttft_seconds:p95_5m",
            "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
        ),
    ]
    alerts = [
        _alert(
            "FlashSparkEngineDown",
            f'up{{job="{VLLM_JOB}"}} == 0 or min(flashspark_engine_up) == 0',
            hold,
            "critical",
            "An engine of the deployment is down (scrape failed or a node's engine exited).",
        ),
        _alert(
            "FlashSparkHealthFailing", "flashspark_health_ok == 0", hold, "critical", "/health is not answering 200."
        ),
        _alert(
            "FlashSparkKVCacheNearFull",
            f"max(vllm:kv_cache_usage_perc) > {watch.kv_usage_alert:g}",
            "5m",
            "warning",
            f"KV-cache usage above {watch.kv_usage_alert:.0%}: requests will queue or preempt.",
        ),
        _alert(
            "FlashSparkPreemptionsRising",
            "sum(increase(vllm:num_preemptions_total[5m])) > 0",
            hold,
            "warning",
            "vLLM preempted requests in the last 5 minutes: the KV pool is too small for the load.",
        ),
        _alert(
            "FlashSparkDraftPositionStopped",
            "sum by (position) (increase(vllm:spec_decode_num_accepted_tokens_per_pos_total[10m])) == 0"
            f" and on() sum(increase(vllm:spec_decode_num_drafts_total[10m])) > {POSITION_MIN_DRAFTS}",
            hold,
            "warning",
            "A draft position accepted nothing over 10 minutes of drafting (a drafter or patch regression).",
        ),
        _alert(
            "FlashSparkCanaryFailing",
            "flashspark_canary_alert == 1",
            "0m",
            "critical",
            "A canary probe failed its rounds in a row: see the watch journal for the evidence.",
        ),
    ]
    floor = recipe.acceptance_floor
    if floor is not None:
        alerts.insert(
            4,
            _alert(
                "FlashSparkAcceptanceBelowFloor",
                f"flashspark:acceptance_rate:5m < {floor:g}",
                "10m",
                "warning",
                f"Speculative acceptance below the profile's floor ({floor:.0%}).",
            ),
        )
    return {
        "groups": [
            {"name": "flashspark-recording", "rules": recording},
            {"name": "flashspark-alerts", "rules": alerts},
        ]
    }


def _record(name: str, expr: str) -> dict[str, Any]:
    return {"record": name, "expr": expr}


def _alert(name: str, expr: str, hold: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": hold,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


def grafana_dashboard(recipe: Recipe) -> dict[str, Any]:
    """A Grafana dashboard (schema 39) over the Prometheus datasource, speculative-decoding panels first."""
    itl = "histogram_quantile({q}, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket[5m])))"
    # (title, expressions, unit)
    panels: list[tuple[str, list[str], str]] = [
        ("Acceptance rate (5m)", ["flashspark:acceptance_rate:5m"], "percentunit"),
        ("Mean accepted length (5m)", ["flashspark:mean_acceptance_length:5m"], "short"),
        ("Acceptance by draft position (5m)", ["flashspark:acceptance_by_position:5m"], "percentunit"),
        ("Generation tokens/s", ["flashspark:generation_tokens:rate1m"], "short"),
        ("Prompt tokens/s", ["flashspark:prompt_tokens:rate1m"], "short"),
        ("TTFT p95 (5m)", ["flashspark:ttft_seconds:p95_5m"], "s"),
        ("Inter-token latency p50 / p99", [itl.format(q=0.5), itl.format(q=0.99)], "s"),
        ("KV-cache usage", ["max(vllm:kv_cache_usage_perc)"], "percentunit"),
        ("Requests running / waiting", ["sum(vllm:num_requests_running)", "sum(vllm:num_requests_waiting)"], "short"),
        ("Preemptions (5m)", ["sum(increase(vllm:num_preemptions_total[5m]))"], "short"),
        ("Canary alerts", ["flashspark_canary_alert"], "short"),
        ("Engines up", ["flashspark_engine_up"], "short"),
    ]
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    built = []
    for index, (title, exprs, unit) in enumerate(panels):
        built.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": 8, "x": 8 * (index % 3), "y": 8 * (index // 3)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "expr": e, "datasource": datasource} for i, e in enumerate(exprs)
                ],
            }
        )
    return {
        "uid": f"flashspark-{recipe.profile.name}"[:40],
        "title": f"FlashSpark — {recipe.cluster.name} ({recipe.profile.name})",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "tags": ["flashspark", "vllm", "speculative-decoding"],
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": built,
    }


def render_monitoring(recipe: Recipe) -> MonitoringFiles:
    return MonitoringFiles(
        prometheus=prometheus_config(recipe), rules=alert_rules(recipe), dashboard=grafana_dashboard(recipe)
    )


def monitoring_services(recipe: Recipe, files: MonitoringFiles) -> dict[str, Any]:
    """Compose services and inline configs that run Prometheus and Grafana beside the head, loopback only.

    The configuration travels inside the compose file (`configs: content:`), so the head needs no
    other file; compose interpolates `$` in it, hence the escaping.
    """
    text = files.files()
    watch = recipe.watch
    provisioning = {
        "apiVersion": 1,
        "datasources": [
            {"name": "Prometheus", "type": "prometheus", "url": f"http://127.0.0.1:{watch.prometheus_port}"}
        ],
    }
    dashboards = {
        "apiVersion": 1,
        "providers": [{"name": "flashspark", "type": "file", "options": {"path": "/etc/flashspark/dashboards"}}],
    }
    configs = {
        "prometheus_yml": text["prometheus.yml"],
        "prometheus_rules": text["rules.yml"],
        "grafana_datasource": yaml.safe_dump(provisioning, sort_keys=False),
        "grafana_dashboards": yaml.safe_dump(dashboards, sort_keys=False),
        "grafana_dashboard_json": text["grafana-dashboard.json"],
    }
    services = {
        "prometheus": {
            "image": PROMETHEUS_IMAGE,
            "network_mode": "host",
            "restart": "unless-stopped",
            "command": [
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                f"--web.listen-address=127.0.0.1:{watch.prometheus_port}",
            ],
            "configs": [
                {"source": "prometheus_yml", "target": "/etc/prometheus/prometheus.yml"},
                {"source": "prometheus_rules", "target": "/etc/prometheus/rules.yml"},
            ],
        },
        "grafana": {
            "image": GRAFANA_IMAGE,
            "network_mode": "host",
            "restart": "unless-stopped",
            "environment": {
                "GF_SERVER_HTTP_ADDR": "127.0.0.1",
                "GF_SERVER_HTTP_PORT": str(watch.grafana_port),
                "GF_AUTH_ANONYMOUS_ENABLED": "true",
                "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
                "GF_AUTH_DISABLE_LOGIN_FORM": "true",
            },
            "configs": [
                {"source": "grafana_datasource", "target": "/etc/grafana/provisioning/datasources/flashspark.yml"},
                {"source": "grafana_dashboards", "target": "/etc/grafana/provisioning/dashboards/flashspark.yml"},
                {"source": "grafana_dashboard_json", "target": "/etc/flashspark/dashboards/flashspark.json"},
            ],
        },
    }
    return {
        "services": services,
        "configs": {name: {"content": body.replace("$", "$$")} for name, body in configs.items()},
    }


def with_monitoring(recipe: Recipe, compose: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The head's compose document with Prometheus and Grafana added, labelled so `down` finds them."""
    extra = monitoring_services(recipe, render_monitoring(recipe))
    services = {
        name: service | {"labels": labels | {f"{LABEL_PREFIX}.role": name}}
        for name, service in extra["services"].items()
    }
    return compose | {"services": compose["services"] | services, "configs": extra["configs"]}
