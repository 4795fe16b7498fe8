"""The report of a `bench sessions` run: a table per turn and one plot of TTFT and cache hits against turns."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from flashspark.bench.sessions import SessionsResults, read_sessions
from flashspark.files import write_atomic
from flashspark.report.common import fmt, save_figure


def write_sessions_report(run_dir: Path) -> list[Path]:
    """Write report.md and sessions.png into run_dir from its sessions.json; return the files written."""
    results = read_sessions(run_dir)
    plot = plot_sessions(run_dir, results)
    write_atomic(run_dir / "report.md", sessions_markdown(results, plot))
    return [run_dir / "report.md", *([plot] if plot is not None else [])]


def _rate(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "–"


def sessions_markdown(results: SessionsResults, plot: Path | None) -> str:
    shape = results.shape
    pins = results.pins.model_dump(exclude_defaults=True)
    profile = (results.recipe or {}).get("profile", {}).get("name")
    lines = [
        f"# Agent sessions: {results.model} ({results.created_at})",
        "",
        "## Config",
        "",
        f"- endpoint: `{results.base_url}`, model `{results.model}`",
        f"- vLLM {pins.get('vllm_version', '?')}; pins: " + ", ".join(f"{k}={v}" for k, v in pins.items()),
        f"- profile `{profile}`" if profile else "- profile: none (a bare --base-url)",
        f"- {shape.agents} agents x {shape.turns} turns in lockstep; shared system prompt ~{shape.system_tokens} "
        f"words, task ~{shape.task_tokens}, tool result ~{shape.growth_tokens} per turn, {shape.output_tokens} "
        f"output tokens per turn, think time {shape.think_time_s:g} s",
        "",
        "## Per turn",
        "",
        "| turn | ok | context tokens (mean) | TTFT p50 s | TTFT max s | decode tok/s p50 | prefix-cache hit rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results.turns:
        lines.append(
            f"| {row.turn} | {row.ok}/{row.requests} | {fmt(row.prompt_tokens_mean, 0)} | {fmt(row.ttft_p50_s, 3)} "
            f"| {fmt(row.ttft_max_s, 3)} | {fmt(row.decode_tokens_per_s_p50)} | {_rate(row.hit_rate)} |"
        )
    later = [row.hit_rate for row in results.turns[1:] if row.hit_rate is not None]
    answered = len(results.records) - results.failed
    verdict = [f"{answered}/{len(results.records)} requests answered in {results.wall_s:.1f} s."]
    if later:
        verdict.append(
            f"From turn 1 on, the server found {min(later):.1%}-{max(later):.1%} of each turn's prompt tokens in "
            "its prefix cache (its own /metrics counters)."
        )
    elif results.turns:
        verdict.append("The server exposes no prefix-cache counters: hit rates are unknown.")
    failed = [r for r in results.records if not r.ok]
    verdict += [f"Agent {r.agent} turn {r.turn} failed: {r.error}" for r in failed[:5]]
    lines += ["", "## Verdict", "", " ".join(verdict)]
    if plot is not None:
        lines += ["", "## Plot", "", f"![{plot.stem}]({plot.name})"]
    return "\n".join(lines) + "\n"


def plot_sessions(run_dir: Path, results: SessionsResults) -> Path | None:
    rows = [r for r in results.turns if r.ttft_p50_s is not None]
    if not rows:
        return None
    turns = [r.turn for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(turns, [r.ttft_p50_s for r in rows], "o-", color="tab:red", label="TTFT p50")
    left.plot(turns, [r.ttft_max_s for r in rows], "v:", color="tab:red", alpha=0.6, label="TTFT max")
    left.set_xlabel("turn")
    left.set_ylabel("TTFT (s)")
    left.set_title("Time to first token as the context grows")
    context = left.twinx()
    context.bar(turns, [r.prompt_tokens_mean or 0 for r in rows], alpha=0.15, color="tab:gray")
    context.set_ylabel("context tokens (mean, bars)")
    left.set_zorder(context.get_zorder() + 1)  # the lines over the bars of the twin axis
    left.patch.set_visible(False)
    left.set_ylim(bottom=0)
    left.legend(loc="upper left")
    right.plot(turns, [100 * (r.hit_rate or 0) for r in rows], "o-", color="tab:green")
    right.set_ylim(0, 100)
    right.set_xlabel("turn")
    right.set_ylabel("prefix-cache hit rate (%)")
    right.set_title("Prompt tokens found in the prefix cache (/metrics)")
    for ax in (left, right):
        ax.set_xticks(turns)
        ax.grid(alpha=0.3)
    return save_figure(fig, run_dir / "sessions.png")
