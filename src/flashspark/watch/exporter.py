"""FlashSpark's own Prometheus metrics: canary results, engine liveness and probe load.

Written by hand in the text exposition format (no global registry): one function from the
canary's state to the page Prometheus scrapes. Label values pass through `label_value`, the
one writer for Prometheus's quoting, because node names come from the user's cluster file.
"""

from __future__ import annotations

from flashspark.watch.canary import PROBES, CanaryState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def label_value(value: str) -> str:
    """A Prometheus label value, quoted: backslash, double quote and newline escaped as the format says."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _family(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)


def exposition(state: CanaryState) -> str:
    """The exporter's `/metrics` page."""
    lines: list[str] = []
    probes = [(p, state.streaks[p]) for p in PROBES]
    by_probe = [f"{{probe={label_value(p)}}}" for p, _ in probes]
    _family(
        lines,
        "flashspark_canary_ok",
        "gauge",
        "1 when the probe's latest judged run passed, 0 when it failed (absent until judged).",
        [(labels, float(s.last_ok)) for labels, (_, s) in zip(by_probe, probes, strict=True) if s.last_ok is not None],
    )
    _family(
        lines,
        "flashspark_canary_failures_in_a_row",
        "gauge",
        "Consecutive failed runs of the probe.",
        [(labels, s.in_a_row) for labels, (_, s) in zip(by_probe, probes, strict=True)],
    )
    _family(
        lines,
        "flashspark_canary_alert",
        "gauge",
        "1 while the probe's failures in a row have reached the alert threshold.",
        [(labels, float(s.alerting)) for labels, (_, s) in zip(by_probe, probes, strict=True)],
    )
    _family(
        lines,
        "flashspark_canary_runs_total",
        "counter",
        "Judged runs of the probe (skips not counted).",
        [(labels, s.runs) for labels, (_, s) in zip(by_probe, probes, strict=True)],
    )
    _family(
        lines,
        "flashspark_canary_failures_total",
        "counter",
        "Failed runs of the probe.",
        [(labels, s.failures) for labels, (_, s) in zip(by_probe, probes, strict=True)],
    )
    _family(lines, "flashspark_canary_rounds_total", "counter", "Canary rounds run.", [("", state.rounds)])
    _family(lines, "flashspark_canary_requests_total", "counter", "Requests the canaries sent.", [("", state.requests)])
    _family(
        lines,
        "flashspark_canary_tokens_total",
        "counter",
        "Tokens the canaries cost (prompt and output).",
        [("", state.tokens)],
    )
    if state.last_round_t is not None:
        _family(
            lines,
            "flashspark_canary_last_round_timestamp_seconds",
            "gauge",
            "Unix time the latest round ended.",
            [("", state.last_round_t)],
        )
    if state.health_ok is not None:
        _family(
            lines,
            "flashspark_health_ok",
            "gauge",
            "1 when the API's /health answered 200.",
            [("", float(state.health_ok))],
        )
    if state.engines:
        _family(
            lines,
            "flashspark_engine_up",
            "gauge",
            "1 while the node's engine process or container runs.",
            [
                (f"{{node={label_value(node)},rank={label_value(str(rank))}}}", float(up))
                for (node, rank), up in sorted(state.engines.items(), key=lambda item: item[0][1])
            ],
        )
    return "\n".join(lines) + "\n"
