"""`flashspark report TUNE_DIR`: the candidates, the verdict and the Pareto front of a tune."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt

from flashspark.files import read_model, write_atomic
from flashspark.report.common import fmt, one_line, save_figure
from flashspark.tune.analysis import Spread, Standing
from flashspark.tune.session import TuneResults


def read_tune(run_dir: Path) -> TuneResults:
    return read_model(
        run_dir / "tune.json",
        TuneResults,
        what="a tune.json FlashSpark can read",
        fix="point at a folder written by `flashspark tune`",
    )


def write_tune_report(run_dir: Path) -> list[Path]:
    results = read_tune(run_dir)
    plot = plot_pareto(run_dir, results.standings)
    write_atomic(run_dir / "report.md", tune_markdown(results, plot))
    return [run_dir / "report.md", *([plot] if plot else [])]


def _spread(value: Spread | None, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value.median:,.{digits}f} ({value.low:,.{digits}f}–{value.high:,.{digits}f})"


def tune_markdown(results: TuneResults, plot: Path | None) -> str:
    w = results.workload
    t = w.traffic
    shape = (
        f"{t.concurrency} at once"
        if t.shape == "static"
        else f"{t.rate:g}/s Poisson, {t.requests} requests, cap {t.concurrency}"
    )
    limits = [
        f"p95 TTFT ≤ {w.objective.max_p95_ttft_s:g} s" if w.objective.max_p95_ttft_s is not None else "",
        f"per-stream decode ≥ {w.objective.min_per_stream_decode_tokens_per_s:g} tok/s"
        if w.objective.min_per_stream_decode_tokens_per_s is not None
        else "",
    ]
    lines = [
        f"# Tune: workload {w.name}",
        "",
        f"Traffic: {shape}; {t.input_tokens:,} tokens in, {t.output_tokens:,} out; {w.tune.rounds} rounds per "
        f"candidate, each candidate on a fresh deployment.",
        f"Objective: {w.objective.direction}imise {w.objective.optimise}"
        + (f", subject to {', '.join(x for x in limits if x)}" if any(limits) else "")
        + ".",
        f"Pins: {', '.join(f'{k} {v}' for k, v in results.pins.items()) or 'none recorded'}.",
        "",
        "## Verdict",
        "",
        results.verdict.text if results.verdict else "Not finished: resume with the same command and --out.",
        "",
        "## Candidates",
        "",
        "| candidate | screen | KV pool predicted / booted | tok/s (median, range) | per-stream tok/s | p95 TTFT s "
        "| feasible | Pareto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    standings = {s.id: s for s in results.standings}
    booted = {r.candidate.id: r.kv_cache_tokens for r in results.results}
    for screened in results.screened:
        cid = screened.candidate.id
        s = standings.get(cid)
        label = cid + (" (recipe)" if screened.candidate.baseline else "")
        screen_text = screened.verdict + (": " + "; ".join(screened.reasons) if screened.reasons else "")
        pool = f"{fmt(screened.predicted_kv_cache_tokens)} / {fmt(booted.get(cid))}"
        if s is None:
            lines.append(f"| {label} | {one_line(screen_text)} | {pool} | – | – | – | – | – |")
            continue
        feasible = "yes" if s.feasible else "no: " + "; ".join(s.violations)
        lines.append(
            f"| {label} | {one_line(screen_text)} | {pool} | {_spread(s.output_tokens_per_s, 1)} | "
            f"{_spread(s.per_stream_decode_tokens_per_s, 2)} | {_spread(s.p95_ttft_s, 3)} | {one_line(feasible)} | "
            f"{'yes' if s.pareto else ''} |"
        )
    lines += [
        "",
        "Evidence per candidate: `candidates/<id>/` (boot.json, bench/results.json, bench/requests.jsonl). "
        "The recommendation: `recommended.toml`.",
    ]
    if plot is not None:
        lines += ["", "## Pareto front", "", f"![{plot.stem}]({plot.name})"]
    return "\n".join(lines) + "\n"


def plot_pareto(run_dir: Path, standings: list[Standing]) -> Path | None:
    points = [s for s in standings if s.output_tokens_per_s is not None and s.p95_ttft_s is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for s in points:
        assert s.output_tokens_per_s is not None and s.p95_ttft_s is not None
        x, y = s.p95_ttft_s, s.output_tokens_per_s
        color = "tab:green" if s.pareto else "tab:gray"
        marker = "*" if s.baseline else "o"
        ax.errorbar(
            x.median,
            y.median,
            xerr=[[x.median - x.low], [x.high - x.median]],
            yerr=[[y.median - y.low], [y.high - y.median]],
            fmt=marker,
            color=color,
            markersize=12 if s.baseline else 7,
            capsize=3,
        )
        ax.annotate(s.id, (x.median, y.median), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = sorted((s for s in points if s.pareto), key=lambda s: s.p95_ttft_s.median if s.p95_ttft_s else 0)
    if len(front) > 1:
        ax.plot(
            [s.p95_ttft_s.median for s in front if s.p95_ttft_s],
            [s.output_tokens_per_s.median for s in front if s.output_tokens_per_s],
            "--",
            color="tab:green",
            label="Pareto front",
        )
        ax.legend()
    ax.set_xlabel("p95 TTFT (s): less is better")
    ax.set_ylabel("aggregate output tok/s: more is better")
    ax.set_title("Tune candidates (star: the recipe's settings; bars: round ranges)")
    ax.grid(alpha=0.3)
    return save_figure(fig, run_dir / "pareto.png")
