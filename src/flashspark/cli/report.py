"""`flashspark report RUN_DIR` and `flashspark compare A B`: what a benchmark run means, for people."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from flashspark.cli import console
from flashspark.cli.common import finish, handle_errors, json_option
from flashspark.cli.console import escape

if TYPE_CHECKING:
    from flashspark.report.compare import Comparison


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@json_option
@handle_errors
def report_command(run_dir: Path, as_json: bool) -> None:
    """Write RUN_DIR/report.md and its PNG plots from a run (bench static, staggered, rate, depth, sessions)."""
    from flashspark.report import write_run_report

    written = write_run_report(run_dir)
    if as_json:
        console.print_json({"written": [str(p) for p in written]})
    else:
        console.print_plain("wrote " + ", ".join(str(p) for p in written))


@click.command("compare")
@click.argument("a", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("b", type=click.Path(path_type=Path, file_okay=False, exists=True))
@json_option
@handle_errors
def compare_command(a: Path, b: Path, as_json: bool) -> None:
    """Per-cell aggregate tok/s of run B against run A; deltas inside the rounds' spread are flagged."""
    from flashspark.report.compare import compare_runs

    comparison = compare_runs(a, b)
    finish(comparison, as_json, lambda: print_compare(comparison))


def print_compare(comparison: Comparison) -> None:
    table = console.table(title="compare: aggregate tok/s, B against A")
    for column in ("cell", "A", "B", "delta", "delta %", "spread", "verdict"):
        table.add_column(column)
    for r in comparison.cells:
        table.add_row(
            escape(r.cell),
            f"{r.a:.1f}",
            f"{r.b:.1f}",
            f"{r.delta:+.1f}",
            f"{r.delta_pct:+.1f}" if r.delta_pct is not None else "-",
            f"{r.spread:.1f}",
            "within noise" if r.within_noise else "[bold]changed[/]",
        )
    console.out.print(table)
