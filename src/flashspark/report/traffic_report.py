"""Reports of harness traffic: a recording (record.json + exchanges.jsonl) and a replay (replay.json)."""

from __future__ import annotations

import json
from pathlib import Path

from flashspark.files import write_atomic
from flashspark.report.common import fmt, one_line
from flashspark.traffic.exchange import read_exchanges
from flashspark.traffic.proxy import RecordSummary
from flashspark.traffic.replay import read_replay


def write_record_report(run_dir: Path) -> list[Path]:
    summary = RecordSummary.model_validate(json.loads((run_dir / "record.json").read_text()))
    exchanges = read_exchanges(run_dir / "exchanges.jsonl") if (run_dir / "exchanges.jsonl").is_file() else []
    latency = summary.added_latency
    lines = [
        f"# Recording: {summary.upstream} ({summary.started_at})",
        "",
        f"- listened on `{summary.listen}`, upstream `{summary.upstream}`, {summary.started_at} to "
        f"{summary.ended_at or 'still running'}",
        f"- {summary.exchanges} exchanges, {summary.chat_exchanges} chat completions, {summary.flagged} flagged, "
        f"{summary.errors} failed; verdicts: "
        + (", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items())) or "none"),
        "- added latency per chunk (upstream read to harness write): "
        + (
            f"p50 {latency.p50_us:.0f} µs, p99 {latency.p99_us:.0f} µs, max {latency.max_us:.0f} µs "
            f"over {latency.chunks:,} chunks"
            if latency
            else "no chunks"
        ),
        "",
        "## Exchanges",
        "",
        "| # | request | status | TTFT s | tokens in/out | verdict | flags | answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, e in enumerate(exchanges):
        answer = e.content or " ".join(str((c.get("function") or {}).get("name")) + "()" for c in e.tool_calls)
        flags = ", ".join(f["detector"] for f in e.flags)
        lines.append(
            f"| {index} | {e.method} {one_line(e.path, 40)} | {fmt(e.status)} | {fmt(e.ttft_s, 3)} | "
            f"{fmt(e.prompt_tokens)}/{fmt(e.completion_tokens)} | {e.verdict or '–'} | {one_line(flags) or '–'} | "
            f"{one_line(e.error or answer) or '–'} |"
        )
    write_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    return [run_dir / "report.md"]


def write_replay_report(run_dir: Path) -> list[Path]:
    results = read_replay(run_dir)
    pins = results.pins.model_dump(exclude_defaults=True)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(results.verdicts.items())) or "nothing replayed"
    lines = [
        f"# Replay: {results.source} against {results.model} ({results.created_at})",
        "",
        f"- endpoint `{results.base_url}`, model `{results.model}`; pins: "
        + ", ".join(f"{k}={v}" for k, v in pins.items()),
        f"- timing {results.timing}, concurrency {results.concurrency}, "
        f"{'salted cold' if results.salted else 'not salted'}; {results.skipped} non-chat exchanges skipped",
        f"- verdicts: {counts}; wall {results.wall_s:.1f} s",
        "",
        "## Exchanges",
        "",
        "| # | recorded | replayed | same tools | TTFT s | sent late s | tokens in/out | flags | answer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in results.outcomes:
        answer = o.content or " ".join(str((c.get("function") or {}).get("name")) + "()" for c in o.tool_calls)
        flags = ", ".join(f"{f['detector']}: {f['detail']}" for f in o.flags)
        same = "–" if o.same_tools is None else ("yes" if o.same_tools else "no")
        lines.append(
            f"| {o.index} | {o.recorded_verdict or '–'} | **{o.verdict}** | {same} | {fmt(o.ttft_s, 3)} | "
            f"{fmt(max(0.0, o.sent_s - o.scheduled_s), 3)} | {fmt(o.prompt_tokens)}/{fmt(o.completion_tokens)} | "
            f"{one_line(flags) or '–'} | {one_line(o.error or answer) or '–'} |"
        )
    write_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    return [run_dir / "report.md"]
