"""FlashSpark's own Prometheus metrics: canary results, engine liveness and probe load.

Written by hand in the text exposition format (no global registry): one function from the
canary's state to the page Prometheus scrapes. Label values pass through `label_value`, the
one writer for Prometheus's quoting, because node names come from the user's cluster file.
"""

from __future__ import annotations

from collections.abc import Callable

from flashspark.watch.canary import PROBES, CanaryState, ProbeStreak

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def label_value(value: str) -> str:
    """A Prometheus label value, quoted: backslash, double quote and newline escaped as the format says."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def sample_value(value: float) -> str:
    """A sample's value, exact: a whole number as digits, a float as Python's shortest round-trip form
    (`:g` would cut a counter of 1,234,567 tokens or a Unix time to six digits)."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return repr(float(value))


def _family(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.extend(f"{name}{labels} {sample_value(value)}" for labels, value in samples)


# Per probe: (family, type, help, the value from the probe's streak; None leaves the probe out).
PER_PROBE: list[tuple[str, str, str, Callable[[ProbeStreak], float | None]]] = [
    (
        "flashspark_canary_ok",
        "gauge",
        "1 when the probe's latest judged run passed, 0 when it failed (absent until judged).",
        lambda s: None if s.last_ok is None else float(s.last_ok),
    ),
    ("flashspark_canary_failures_in_a_row", "gauge", "Consecutive failed runs of the probe.", lambda s: s.in_a_row),
    (
        "flashspark_canary_alert",
        "gauge",
        "1 while the probe's failures in a row have reached the alert threshold.",
        lambda s: float(s.alerting),
    ),
    ("flashspark_canary_runs_total", "counter", "Judged runs of the probe (skips not counted).", lambda s: s.runs),
    ("flashspark_canary_failures_total", "counter", "Failed runs of the probe.", lambda s: s.failures),
]


def exposition(state: CanaryState) -> str:
    """The exporter's `/metrics` page."""
    lines: list[str] = []
    for name, kind, help_text, read in PER_PROBE:
        values = [(f"{{probe={label_value(p)}}}", read(state.streaks[p])) for p in PROBES]
        _family(lines, name, kind, help_text, [(labels, v) for labels, v in values if v is not None])
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
