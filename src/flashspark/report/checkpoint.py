"""`flashspark report RUN_DIR`: a Markdown checkpoint note and PNG plots from a benchmark run.

The note follows the recipe's checkpoint notes: configuration and pins, boot
evidence, tables of measurements, and a verdict paragraph. Every number comes
from results.json; acceptance is the raw counter deltas' ratio, not recomputed
from client data. `compare A B` prints per-cell deltas and flags those inside
the run-to-run spread of the rounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt

from flashspark.bench.efficiency import cell_efficiency, recommend_k
from flashspark.bench.records import RequestRecord
from flashspark.bench.results import BenchResults, SloCheck, read_requests, read_results
from flashspark.bench.stats import CellSummary
from flashspark.files import write_atomic
from flashspark.report.common import fmt, one_line, save_figure


def write_report(run_dir: Path) -> list[Path]:
    """Write report.md and its plots into run_dir; return the files written."""
    results = read_results(run_dir)
    requests = read_requests(run_dir)
    cells = results.cells
    plots = [
        p
        for p in (plot_throughput(run_dir, cells), plot_acceptance(run_dir, cells), plot_ttft(run_dir, requests))
        if p is not None
    ]
    write_atomic(run_dir / "report.md", markdown(results, cells, plots))
    return [run_dir / "report.md", *plots]


def markdown(results: BenchResults, cells: list[CellSummary], plots: list[Path]) -> str:
    pins = results.pins.model_dump(exclude_defaults=True)
    recipe = results.recipe or {}
    boot = results.boot or {}
    engine = recipe.get("engine", {})
    lines = [
        f"# Benchmark checkpoint: {results.model} ({results.shape}, {results.created_at})",
        "",
    ]
    lines += ["## Config", ""]
    lines += [f"- endpoint: `{results.base_url}`, model `{results.model}`"]
    lines += [f"- vLLM {pins.get('vllm_version', '?')}; pins: " + ", ".join(f"{k}={v}" for k, v in pins.items())]
    if recipe:
        lines.append(
            f"- profile `{recipe.get('profile', {}).get('name')}`: max_model_len {engine.get('max_model_len')}, "
            f"max_num_seqs {engine.get('max_num_seqs')}, max_num_batched_tokens "
            f"{engine.get('max_num_batched_tokens')}, kv_cache_dtype {engine.get('kv_cache_dtype')}, "
            f"speculative {recipe.get('speculative', {}).get('method')} k="
            f"{recipe.get('speculative', {}).get('num_speculative_tokens')}"
        )
    options = results.options
    lines.append(f"- options: {', '.join(f'{k}={v}' for k, v in options.items())}")
    if boot:
        evidence = boot.get("evidence", {})
        lines += [
            "",
            "## Boot",
            "",
            "```",
            f"KV cache size: {fmt(evidence.get('kv_cache_tokens'))} tokens",
            f"Maximum concurrency for {fmt(evidence.get('max_concurrency_for_tokens'))} tokens per request: "
            f"{evidence.get('max_concurrency')}x",
            f"engine init {evidence.get('engine_init_s')} s; ready after {boot.get('boot_s')} s",
            "```",
        ]
    lines += [
        "",
        "## Results",
        "",
        "| cell | ok/total | aggregate tok/s (client) | aggregate tok/s (server) | per-stream decode tok/s "
        "| TTFT p50 / p99 ms | E2E p50 ms | tokens/chunk | acceptance | mean acc. length | prefix hits | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c.cell} | {c.completed}/{c.requests} | {fmt(c.output_throughput)} | "
            f"{fmt(c.server_output_throughput)} | {fmt(c.per_stream_decode_tokens_per_s_mean)} | "
            f"{fmt(c.median_ttft_ms, 0)} / {fmt(c.p99_ttft_ms, 0)} | "
            f"{fmt(c.median_e2el_ms, 0)} | "
            f"{fmt(c.tokens_per_chunk_mean, 2)} | {fmt(c.spec_decode_acceptance_rate, 3)} | "
            f"{fmt(c.spec_decode_acceptance_length, 2)} | {fmt(c.prefix_cache_hit_rate, 3)} | "
            f"{c.error_kinds or '–'} |"
        )
    categories = sorted({cat for c in cells for cat in c.per_category})
    if len(categories) > 1:
        lines += [
            "",
            "### Per category",
            "",
            "| cell | category | ok | per-stream decode tok/s | tokens/chunk |",
            "|---|---|---|---|---|",
        ]
        for c in cells:
            for cat, s in c.per_category.items():
                lines.append(
                    f"| {c.cell} | {cat} | {s.completed} | "
                    f"{fmt(s.per_stream_decode_tokens_per_s_mean)} | {fmt(s.tokens_per_chunk_mean, 2)} |"
                )
    if results.slo is not None:
        lines += slo_section(results.slo)
    lines += efficiency_section(results, cells)
    lines += client_check(results.calibration, cells)
    warnings = [w for c in cells for w in c.warnings] + [f"{c.cell}: {r}" for c in cells for r in c.client_limited]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Verdict", "", verdict(cells, warnings)]
    return "\n".join(lines) + "\n"


def efficiency_section(results: BenchResults, cells: list[CellSummary]) -> list[str]:
    """Decode against the memory roofline per cell, and the draft length per concurrency."""
    lines = ["", "## Efficiency", ""]
    roofline = results.roofline
    if roofline is None:
        lines.append(f"No roofline: {one_line(results.roofline_note or 'not recorded by this run', 300, table=False)}.")
    else:
        lines += [
            f"Memory roofline: {fmt(roofline.bandwidth_gb_s)} GB/s "
            f"({one_line(roofline.bandwidth_source, 200, table=False)}); bytes per step: "
            f"{one_line(roofline.bytes_source, 300, table=False)}. A ceiling, not a forecast: compute is not in it.",
            "",
            "| cell | streams | tokens/step | context | decode tok/s | ceiling tok/s | efficiency |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in cells:
            row = cell_efficiency(c, roofline)
            if row is not None:
                lines.append(
                    f"| {c.cell} | {row.concurrency} | {fmt(row.tokens_per_step, 2)} | {fmt(row.context_tokens, 0)} | "
                    f"{fmt(row.decode_tokens_per_s)} | {fmt(row.ceiling_tokens_per_s)} | {row.efficiency:.1%} |"
                )
    speculative = (results.recipe or {}).get("speculative")
    draft = roofline.draft if roofline else str(speculative.get("method") if isinstance(speculative, dict) else None)
    fit, why = recommend_k(cells, draft)
    lines.append("")
    if fit is None:
        lines.append(f"No draft-length advice: {why}.")
        return lines
    lines += [
        f"Draft length per concurrency, from each position's acceptance and the step time fitted as "
        f"{fit.step_fixed_ms:.2f} ms + {fit.step_per_token_ms:.3f} ms per batch token over {fit.cells} cells "
        f"({fit.note}):",
        "",
        "| streams | measured k | recommended k | tokens/step at k = 0..K | predicted speed-up |",
        "|---|---|---|---|---|",
    ]
    for advice in fit.advice:
        steps = " / ".join(f"{v:.2f}" for v in advice.tokens_per_step.values())
        lines.append(
            f"| {advice.concurrency} | {advice.measured_k} | {advice.recommended_k} | {steps} | {advice.speedup:.2f}x |"
        )
    return lines


def slo_section(check: SloCheck) -> list[str]:
    """The planner's prediction beside this run's measurement of the same traffic."""
    p = check.prediction
    lines = [
        "",
        "## Predicted beside measured",
        "",
        f"Prediction: {p.method}, for max_num_seqs {p.knobs.max_num_seqs}, max_num_batched_tokens "
        f"{p.knobs.max_num_batched_tokens:,}, k {p.knobs.num_speculative_tokens}, from the ladders in "
        f"{', '.join(one_line(s, 200, table=False) for s in p.ladders.sources) or 'an unnamed source'}. Measured over "
        f"{check.measured_requests} successful requests of the measured rounds (warm-up rounds left out).",
        "",
        f"| number | predicted | measured | error | within {check.target_error:.0%} |",
        "|---|---|---|---|---|",
    ]
    for n in check.numbers:
        error = "–" if n.error is None else f"{n.error:+.1%}"
        within = {True: "yes", False: "**no**", None: "–"}[n.within_target]
        lines.append(f"| {n.name} | {fmt(n.predicted, 3)} | {fmt(n.measured, 3)} | {error} | {within} |")
    lines += [f"- warning: {one_line(w, 300, table=False)}" for w in check.warnings]
    return lines


def client_check(calibration: dict[str, Any] | None, cells: list[CellSummary]) -> list[str]:
    """The client's own timing error and each cell's dispatch delay: can these numbers be the server's?"""
    lines = ["", "## Client self-check", ""]
    if calibration:
        lines.append(f"Calibration: {one_line(str(calibration.get('method', '')), 300, table=False)}.")
        lines += [
            "",
            "| streams per process | pace ms | requests | error p50 ms | error p99 ms | max ms |",
            "|---|---|---|---|---|---|",
        ]
        for point in calibration.get("points", []):
            lines.append(
                f"| {point['streams']} | {fmt(point.get('pace_ms'))} | {point['requests']} | "
                f"{fmt(point['error_p50_ms'], 3)} | "
                f"{fmt(point['error_p99_ms'], 3)} | {fmt(point['error_max_ms'], 3)} |"
            )
        capacity = calibration.get("capacity_chunks_per_s")
        if capacity:
            lines += ["", f"One client process took in {fmt(capacity)} chunks/s from the unpaced stand-in."]
    else:
        lines.append("No calibration was run (--no-calibrate, or a results.json from before it existed).")
    lines += [
        "",
        "| cell | processes | dispatch delay p50 / p99 / max ms | of it: cap wait p99 ms | client lateness p99 ms "
        "| verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        verdict_text = "client-limited: " + "; ".join(c.client_limited) if c.client_limited else "ok"
        lines.append(
            f"| {c.cell} | {c.processes} | {fmt(c.median_dispatch_delay_ms, 2)} / {fmt(c.p99_dispatch_delay_ms, 2)} / "
            f"{fmt(c.max_dispatch_delay_ms, 2)} | {fmt(c.p99_queue_wait_ms, 2)} | "
            f"{fmt(c.p99_client_lateness_ms, 2)} | {verdict_text} |"
        )
    reasons = [f"- {c.cell}: {one_line(c.processes_reason, 300, table=False)}" for c in cells if c.processes_reason]
    if reasons:
        lines += ["", "How `--processes auto` chose:", "", *reasons]
    return lines


def verdict(cells: list[CellSummary], warnings: list[str]) -> str:
    if not cells:
        return "No cell finished."
    failed = sum(c.failed for c in cells)
    total = sum(c.requests for c in cells)
    best = max(cells, key=lambda c: c.output_throughput)
    single = [c for c in cells if c.level == 1]
    parts = [f"{total - failed}/{total} requests succeeded."]
    parts.append(f"Best aggregate {fmt(best.output_throughput)} tok/s in {best.cell}.")
    if single:
        parts.append(
            f"Single stream decodes at {fmt(single[0].per_stream_decode_tokens_per_s_mean)} tok/s "
            "per token (not per chunk)."
        )
    acceptance = [c.spec_decode_acceptance_rate for c in cells if c.spec_decode_acceptance_rate is not None]
    if acceptance:
        parts.append(f"Draft acceptance ranged {min(acceptance):.3f}-{max(acceptance):.3f} across cells.")
    if failed:
        parts.append(f"{failed} requests failed: read requests.jsonl for their errors.")
    parts += [f"Warning: {w}" for w in warnings]
    return " ".join(parts)


def plot_throughput(run_dir: Path, cells: list[CellSummary]) -> Path | None:
    static = [c for c in cells if c.shape == "static" and c.level is not None]
    if not static:
        return None
    best: dict[int, CellSummary] = {}
    for c in static:
        level = c.level or 0
        if level not in best or c.output_throughput > best[level].output_throughput:
            best[level] = c
    levels = sorted(best)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(levels, [best[lv].output_throughput for lv in levels], "o-", label="aggregate (client, usage)")
    server = [best[lv].server_output_throughput for lv in levels]
    if all(v is not None for v in server):
        ax.plot(levels, [float(v) for v in server if v is not None], "s--", label="aggregate (server, /metrics)")
    ax.plot(
        levels,
        [best[lv].per_stream_decode_tokens_per_s_mean or 0 for lv in levels],
        "^-",
        label="per-stream decode (per token)",
    )
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("tokens / s")
    ax.set_xticks(levels)
    ax.set_title("Throughput against concurrency (best round per level)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, run_dir / "throughput.png")


def plot_acceptance(run_dir: Path, cells: list[CellSummary]) -> Path | None:
    rated = [c for c in cells if c.spec_decode_per_position_acceptance_rates]
    if not rated:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for c in rated:
        rates = c.spec_decode_per_position_acceptance_rates
        ax.plot(range(len(rates)), rates, "o-", label=c.cell)
    ax.set_xlabel("draft position")
    ax.set_ylabel("accepted / drafts")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(max(len(c.spec_decode_per_position_acceptance_rates) for c in rated)))
    ax.set_title("Speculative acceptance by draft position")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, run_dir / "acceptance.png")


def plot_ttft(run_dir: Path, requests: list[RequestRecord]) -> Path | None:
    by_cell: dict[str, list[float]] = {}
    for r in requests:
        if r.error is None and r.ttft_s is not None:
            by_cell.setdefault(r.cell, []).append(r.ttft_s * 1000)
    if not by_cell:
        return None
    names = list(by_cell)
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.9), 4.2))
    ax.boxplot([by_cell[n] for n in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("Time to first token per cell")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, run_dir / "ttft.png")
