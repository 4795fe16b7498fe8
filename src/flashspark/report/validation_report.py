"""Reports of the gates: a validate run (validation.json) and the agent gates run alone (tools.json,
longdecode.json). Tables per gate, per tool-call case and per long-decode stream, and a plot of the
long-decode windows: where each stream stayed clean and where it went bad."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from flashspark.files import write_atomic
from flashspark.gates.longdecode import LongDecodeReport
from flashspark.gates.tools import ToolsReport
from flashspark.gates.validate import ValidationResult
from flashspark.report.common import fmt, one_line, save_figure


def tools_section(report: ToolsReport) -> list[str]:
    lines = [
        "## Tool calls",
        "",
        f"Expected to pass on this profile: {', '.join(report.expected) or 'none'}. "
        f"Passed: {', '.join(report.passed) or 'none'}.",
        "",
        "| case | expected | result | failed checks | calls | content |",
        "|---|---|---|---|---|---|",
    ]
    for case in report.cases:
        calls = "; ".join(
            f"{(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments', '')})"
            for c in case.tool_calls
        )
        result = "pass" if case.ok else ("**FAIL**" if case.expected else "fail (not expected)")
        lines.append(
            f"| {case.case} | {'yes' if case.expected else 'no'} | {result} | {', '.join(case.failed) or '–'} | "
            f"{one_line(calls, 60) or '–'} | {one_line(case.error or case.content, 50) or '–'} |"
        )
    failed = [(case.case, check) for case in report.cases for check in case.checks if not check.ok]
    if failed:
        lines += ["", "Why each failed check failed:", ""]
        lines += [f"- `{name}` {check.name}: {one_line(check.detail, 160, table=False)}" for name, check in failed]
    return lines


def longdecode_section(report: LongDecodeReport, plot: Path | None) -> list[str]:
    lines = [
        "## Long decode",
        "",
        f"{report.concurrency} generation(s) of {report.tokens:,} tokens at once, every {report.window_tokens}-token "
        f"window checked by every garble detector; {report.aggregate_tokens_per_s:.1f} tok/s aggregate, "
        f"{report.wall_s:.1f} s.",
        "",
        "| stream | ok | tokens | windows | first bad window (tokens) | detectors | bad windows | decode tok/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stream in report.streams:
        bad = stream.first_bad
        where = f"{bad.window.first_token:,}-{bad.window.end_token:,}" if bad else "–"
        fired = ", ".join(h["detector"] for h in bad.hits) if bad else ", ".join(stream.problems) or "–"
        lines.append(
            f"| {stream.index} | {'yes' if stream.ok else '**no**'} | {fmt(stream.completion_tokens)} | "
            f"{stream.windows} | {where} | {one_line(fired, 60)} | {stream.bad_windows} | "
            f"{fmt(stream.decode_tokens_per_s)} |"
        )
    samples = [(s.index, s.first_bad.sample) for s in report.streams if s.first_bad is not None]
    if samples:
        lines += ["", "Where each bad stream went bad:", ""]
        lines += [
            f"- stream {index}: `{one_line(sample, 160, table=False).replace(chr(96), chr(39))}`"
            for index, sample in samples
        ]
    if plot is not None:
        lines += ["", f"![{plot.stem}]({plot.name})"]
    return lines


def plot_longdecode(run_dir: Path, report: LongDecodeReport) -> Path | None:
    """One row per stream, one cell per window: clean, the first bad one, and the windows after it."""
    streams = [s for s in report.streams if s.windows]
    if not streams:
        return None
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.45 * len(streams)))
    colours = {"clean": "tab:green", "first bad": "tab:red", "after the first bad": "tab:orange"}
    for row, stream in enumerate(streams):
        first = stream.first_bad.window.index if stream.first_bad is not None else None
        for window in range(stream.windows):
            state = (
                "clean"
                if first is None or window < first
                else ("first bad" if window == first else "after the first bad")
            )
            start = window * report.window_tokens
            ax.barh(row, report.window_tokens, left=start, color=colours[state], edgecolor="white", height=0.8)
    ax.set_yticks(range(len(streams)), [f"stream {s.index}" for s in streams])
    ax.set_xlabel("generated tokens")
    ax.set_title(f"Long decode: {report.window_tokens}-token windows, checked by every garble detector")
    handles = [Patch(color=c, label=label) for label, c in colours.items()]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, fontsize=8, frameon=False)
    ax.invert_yaxis()
    return save_figure(fig, run_dir / "longdecode.png")


def write_validation_report(run_dir: Path) -> list[Path]:
    result = ValidationResult.model_validate(json.loads((run_dir / "validation.json").read_text()))
    pins = result.pins.model_dump(exclude_defaults=True)
    profile = (result.recipe or {}).get("profile", {}).get("name")
    lines = [
        f"# Validation: {result.model} ({result.created_at})",
        "",
        f"- endpoint `{result.base_url}`, model `{result.model}`; "
        + (f"profile `{profile}`" if profile else "no profile (a bare --base-url)"),
        "- pins: " + ", ".join(f"{k}={v}" for k, v in pins.items()),
        f"- verdict: **{'PASS' if result.ok else 'FAIL'}**",
        "",
        "## Gates",
        "",
        "| gate | status | seconds | summary |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {g.name} | {g.status if g.status in ('pass', 'skip') else f'**{g.status}**'} | {g.duration_s:.1f} | "
        f"{one_line(g.summary, 140)} |"
        for g in result.gates
    ]
    written: list[Path] = []
    gates: dict[str, dict[str, Any]] = {g.name: g.report for g in result.gates if g.report}
    if "tools" in gates:
        lines += ["", *tools_section(ToolsReport.model_validate(gates["tools"]))]
    if "longdecode" in gates:
        longdecode = LongDecodeReport.model_validate(gates["longdecode"])
        plot = plot_longdecode(run_dir, longdecode)
        written += [plot] if plot is not None else []
        lines += ["", *longdecode_section(longdecode, plot)]
    write_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    return [run_dir / "report.md", *written]


def write_tools_report(run_dir: Path) -> list[Path]:
    report = ToolsReport.model_validate(json.loads((run_dir / "tools.json").read_text()))
    lines = [f"# Tool-call gate: {report.model} — {'PASS' if report.ok else 'FAIL'}", "", *tools_section(report)]
    write_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    return [run_dir / "report.md"]


def write_longdecode_report(run_dir: Path) -> list[Path]:
    report = LongDecodeReport.model_validate(json.loads((run_dir / "longdecode.json").read_text()))
    plot = plot_longdecode(run_dir, report)
    title = f"# Long-decode gate: {report.model} — {'PASS' if report.ok else 'FAIL'}"
    write_atomic(run_dir / "report.md", "\n".join([title, "", *longdecode_section(report, plot)]) + "\n")
    return [run_dir / "report.md", *([plot] if plot is not None else [])]
