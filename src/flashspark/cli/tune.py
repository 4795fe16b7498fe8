"""`flashspark tune --workload FILE`: the best settings of the recipe for a declared workload."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flashspark.cli import console, exit_codes
from flashspark.cli.common import fail, finish, handle_errors, json_option, load_recipe, recipe_options, run
from flashspark.cli.console import escape

if TYPE_CHECKING:
    from flashspark.recipe.model import Recipe
    from flashspark.tune.session import TuneResults


@click.command("tune")
@recipe_options
@click.option(
    "--workload",
    "workload_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="The workload TOML: [traffic], [objective], [search] ranges, [tune] rounds.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The tune's folder (default: a new run directory). Give an interrupted tune's folder to resume it.",
)
@click.option("--dry-run", is_flag=True, help="Screen the candidates with the rules and the planner; boot nothing.")
@click.option("--quiet", is_flag=True, help="Do not stream the engines' log lines.")
@json_option
@handle_errors
def tune_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    workload_file: Path,
    out: Path | None,
    dry_run: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Measure candidate settings on fresh deployments and recommend the best for a workload.

    \b
    The workload file declares the traffic, the objective and the ranges:
      [traffic]   shape = "static" | "rate", concurrency, rate, requests,
                  input_tokens, output_tokens, seed
      [objective] optimise = "output_tokens_per_s" | "per_stream_decode_tokens_per_s"
                  | "p95_ttft_s", max_p95_ttft_s, min_per_stream_decode_tokens_per_s
      [search]    max_num_seqs, max_num_batched_tokens, num_speculative_tokens,
                  gpu_memory_utilization (lists of values)
      [tune]      rounds (the run-to-run spread, default 3), warmup_rounds
                  (run first, left out of the numbers, default 1), warmup_requests
    The recipe's own settings are always measured first. Candidates the rules
    refuse, or whose KV pool the planner finds too small for the traffic's live
    requests, are dropped before any boot. Each kept candidate boots fresh
    (`up`), runs the traffic `rounds` times (`bench`), and is stopped (`down`).
    A candidate wins only by more than the rounds' spread. Ctrl-C stops cleanly;
    run the same command with --out DIR to resume. Writes tune.json,
    candidates/<id>/, recommended.toml, report.md and pareto.png.
    """
    from flashspark.cluster.lifecycle import new_run_dir
    from flashspark.recipe.workload import load_workload
    from flashspark.report.tune_report import write_tune_report
    from flashspark.tune.session import run_tune

    workload = load_workload(workload_file)

    def resolve(extra: Sequence[str]) -> Recipe:
        return load_recipe(config, profile, (*sets, *extra), local=True).recipe

    folder = out or new_run_dir(resolve(()), "tune")
    console.print_plain(f"tune folder: {folder} (resume: the same command with --out {folder})", err=True)

    async def tune_until_stopped() -> TuneResults:
        # SIGTERM and a hung-up terminal stop a tune as Ctrl-C does: the running candidate's deployment is
        # stopped (the lifecycle's `down` runs as the cancellation unwinds) and the folder stays resumable.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, task.cancel)
        events = console.ConsoleEvents(show_logs=not quiet)
        return await run_tune(workload, resolve, folder, events=events, dry_run=dry_run)

    try:
        result = run(tune_until_stopped())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print_plain(f"interrupted: resume with the same command and --out {folder}", err=True)
        fail(exit_codes.INTERRUPTED)
    if result.complete:
        write_tune_report(folder)
    finish(result, as_json, lambda: print_tune(result, folder), ok=_ok(result), fail_code=exit_codes.CHECK_FAILED)


def _ok(result: TuneResults) -> bool:
    """Dry runs pass; a finished tune passes when some candidate met the objective's limits."""
    return not result.complete or (result.verdict is not None and result.verdict.best is not None)


def print_tune(result: TuneResults, folder: Path) -> None:
    table = console.table(
        title=f"tune: workload {result.workload.name}, objective {result.workload.objective.optimise}"
    )
    for column in ("candidate", "screen", "pool (pred.)", "tok/s", "per-stream", "p95 TTFT s", "feasible", "Pareto"):
        table.add_column(column)
    standings = {s.id: s for s in result.standings}
    for screened in result.screened:
        s = standings.get(screened.candidate.id)
        label = screened.candidate.id + (" *" if screened.candidate.baseline else "")
        # The first clause of each reason; tune.json and report.md keep them whole.
        reason = screened.verdict + "".join(f": {r.split('; fix:')[0]}" for r in screened.reasons[:1])
        pool = f"{screened.predicted_kv_cache_tokens:,}" if screened.predicted_kv_cache_tokens else "-"
        if s is None:
            table.add_row(escape(label), escape(reason), pool, "-", "-", "-", "-", "-")
            continue
        table.add_row(
            escape(label),
            escape(reason),
            pool,
            f"{s.output_tokens_per_s.median:.1f}" if s.output_tokens_per_s else "-",
            f"{s.per_stream_decode_tokens_per_s.median:.2f}" if s.per_stream_decode_tokens_per_s else "-",
            f"{s.p95_ttft_s.median:.3f}" if s.p95_ttft_s else "-",
            "yes" if s.feasible else escape("no: " + "; ".join(s.violations)),
            "yes" if s.pareto else "",
        )
    console.out.print(table)
    if result.verdict is not None:
        console.out.print(f"[bold]verdict[/]: {escape(result.verdict.text)}")
    if result.overlay:
        console.print_plain(f"recommendation: {result.overlay}\nreport: {folder / 'report.md'}")
    elif not result.complete:
        console.print_plain(f"screened only (--dry-run): {folder / 'tune.json'}")
