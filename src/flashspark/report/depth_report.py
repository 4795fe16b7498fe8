"""The report of a `bench depth` run: a table of the ladder and one plot, depth on a log axis."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
from matplotlib.ticker import ScalarFormatter

from flashspark.bench.depth import DepthResults, read_depth
from flashspark.files import write_atomic
from flashspark.report.common import fmt, save_figure


def write_depth_report(run_dir: Path) -> list[Path]:
    """Write report.md and depth.png into run_dir from its depth.json; return the files written."""
    results = read_depth(run_dir)
    plot = plot_depth(run_dir, results)
    write_atomic(run_dir / "report.md", depth_markdown(results, plot))
    return [run_dir / "report.md", *([plot] if plot is not None else [])]


def depth_markdown(results: DepthResults, plot: Path | None) -> str:
    pins = results.pins.model_dump(exclude_defaults=True)
    profile = (results.recipe or {}).get("profile", {}).get("name")
    lines = [
        f"# Depth ladder: {results.model} ({results.created_at})",
        "",
        "## Config",
        "",
        f"- endpoint: `{results.base_url}`, model `{results.model}`, max_model_len {fmt(results.max_model_len)}",
        f"- vLLM {pins.get('vllm_version', '?')}; pins: " + ", ".join(f"{k}={v}" for k, v in pins.items()),
        f"- profile `{profile}`" if profile else "- profile: none (a bare --base-url)",
        f"- {results.output_tokens} output tokens per point, {results.repeats} request(s) per depth, one at a "
        "time; each prompt exactly its depth by the server's /tokenize and salted cold",
    ]
    if results.capped:
        lines.append(f"- capped: {results.capped}")
    lines += [
        "",
        "## Results",
        "",
        "| depth (tokens) | billed prompt tokens | ok | TTFT s | cold prefill tok/s | decode tok/s at depth |",
        "|---|---|---|---|---|---|",
    ]
    for row in results.rows:
        lines.append(
            f"| {row.depth:,} | {fmt(row.prompt_tokens)} | {row.ok}/{row.requests} | {fmt(row.ttft_s, 3)} | "
            f"{fmt(row.prefill_tokens_per_s, 0)} | {fmt(row.decode_tokens_per_s)} |"
        )
    hits = [p.prefix_cache_hit_tokens for p in results.points if p.prefix_cache_hit_tokens is not None]
    failed = [p for p in results.points if not p.ok]
    lines += ["", "## Verdict", ""]
    verdict = [f"{len(results.points) - len(failed)}/{len(results.points)} points answered."]
    if hits:
        verdict.append(
            "Every prefill was cold (no prefix-cache hit)."
            if not any(hits)
            else f"Prefix-cache hits during the ladder: {sum(hits):,.0f} tokens (the salt did not keep it cold)."
        )
    verdict += [f"Depth {p.depth:,} failed: {p.error}" for p in failed]
    lines.append(" ".join(verdict))
    if plot is not None:
        lines += ["", "## Plot", "", f"![{plot.stem}]({plot.name})"]
    return "\n".join(lines) + "\n"


def plot_depth(run_dir: Path, results: DepthResults) -> Path | None:
    rows = [r for r in results.rows if r.ttft_s is not None]
    if not rows:
        return None
    depths = [r.depth for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(depths, [r.ttft_s for r in rows], "o-", color="tab:red")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    left.set_xlabel("context depth (tokens, log)")
    left.set_ylabel("TTFT (s, log)")
    left.set_title("Time to first token, cold prefill")
    right.plot(depths, [r.prefill_tokens_per_s or 0 for r in rows], "o-", label="cold prefill tok/s")
    right.plot(depths, [r.decode_tokens_per_s or 0 for r in rows], "s--", label="decode tok/s at depth")
    right.set_xscale("log", base=2)
    right.set_xlabel("context depth (tokens, log)")
    right.set_ylabel("tokens / s")
    right.set_title("Prefill and decode rate against depth")
    right.legend()
    for ax in (left, right):
        ax.set_xticks(depths, [f"{d // 1024}K" if d >= 1024 else str(d) for d in depths])
        ax.grid(alpha=0.3, which="both")
    return save_figure(fig, run_dir / "depth.png")
