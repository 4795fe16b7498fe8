"""The soak report: totals, problems by detector with their evidence, and the timeline plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from flashspark.files import write_atomic
from flashspark.report.common import fmt, one_line, save_figure
from flashspark.watch.soak import read_soak


def write_soak_report(run_dir: Path) -> list[Path]:
    summary, events = read_soak(run_dir)
    o = summary.options
    state = "completed" if summary.finished else ("stopped early" if summary.stopped_early else "running")
    lines = [
        f"# Soak: {summary.model} at {summary.base_url} ({summary.started_at})",
        "",
        f"- {state} after {summary.wall_s / 60:.1f} of {o.duration_s / 60:.1f} minutes at concurrency "
        f"{o.concurrency}; max_tokens from {list(o.max_tokens)}, temperature from {list(o.temperatures)}",
        f"- {summary.requests:,} requests, {summary.completion_tokens:,} tokens: "
        f"{fmt(summary.aggregate_tokens_per_s, 1)} tok/s aggregate, {fmt(summary.per_stream_tokens_per_s_p50, 1)} "
        f"tok/s per stream (p50), TTFT p50 {fmt(summary.ttft_p50_s, 3)} s / p95 {fmt(summary.ttft_p95_s, 3)} s",
        f"- {summary.errors} errors, {summary.degenerate} degenerate replies"
        + (": " + ", ".join(f"{d} {n}" for d, n in sorted(summary.problems.items())) if summary.problems else ""),
        f"- canary: {summary.canary_rounds} rounds, failures "
        + (", ".join(f"{p} {n}" for p, n in summary.canary_failures.items()) or "none")
        + ", alerts "
        + (", ".join(summary.canary_alerts) or "none"),
        f"- verdict: **{'healthy' if summary.healthy else 'NOT healthy'}**",
        "",
    ]
    problems = [e for e in events if e.get("event") == "problem"]
    if problems:
        lines += ["## Problems", "", "| # | kind | temp | what | reply |", "|---|---|---|---|---|"]
        for e in problems[:200]:
            what = e.get("error") or "; ".join(f"{d['detector']}: {d['detail']}" for d in e.get("detectors", []))
            lines.append(
                f"| {e.get('index')} | {e.get('kind')} | {e.get('temperature')} | {one_line(what, 80)} | "
                f"{one_line(e.get('content') or '', 60) or '–'} |"
            )
        lines.append("")
    plot = _timeline(events, run_dir / "soak.png")
    lines += ["## Timeline", "", f"![timeline]({plot.name})", ""]
    write_atomic(run_dir / "report.md", "\n".join(lines))
    return [run_dir / "report.md", plot]


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["t_s"] / 60, r[key]) for r in rows if r.get(key) is not None]
    return [t for t, _ in points], [v for _, v in points]


def _timeline(events: list[dict[str, Any]], path: Path) -> Path:
    samples = [e for e in events if e.get("event") == "sample"]
    requests = [e for e in events if e.get("event") == "request"]
    fig, axes = plt.subplots(5, 1, figsize=(9, 11), sharex=True)
    panels = [
        (axes[0], "generation_tps", "generation tok/s", 1.0),
        (axes[2], "kv_usage", "KV-cache usage %", 100.0),
        (axes[3], "acceptance_rate", "acceptance %", 100.0),
    ]
    for axis, key, label, scale in panels:
        t, v = _series(samples, key)
        axis.plot(t, [x * scale for x in v], lw=1)
        axis.set_ylabel(label)
    t, ttft = _series(requests, "ttft_s")
    axes[1].scatter(t, ttft, s=6)
    axes[1].set_ylabel("TTFT s (each request)")
    bad = [r["t_s"] / 60 for r in requests if not r.get("ok")]
    start = next((e["t"] for e in events if e.get("event") == "start"), 0.0)
    sick = [(e["t"] - start) / 60 for e in events if e.get("event") == "canary" and e.get("failing")]
    axes[4].scatter(bad, [1] * len(bad), marker="x", color="tab:red", label=f"bad replies ({len(bad)})")
    axes[4].scatter(sick, [0] * len(sick), marker="o", color="tab:orange", label=f"failed canary rounds ({len(sick)})")
    axes[4].set_yticks([0, 1], ["canary", "replies"])
    axes[4].set_ylim(-0.5, 1.5)
    axes[4].legend(loc="upper right", fontsize=8)
    axes[4].set_ylabel("failures")
    axes[4].set_xlabel("minutes")
    fig.suptitle("soak timeline")
    return save_figure(fig, path)
