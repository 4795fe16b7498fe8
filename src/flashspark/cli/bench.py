"""`flashspark bench static|staggered|rate|depth`: honest measurements over the client, written as they are taken."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from flashspark.bench.options import (
    CATEGORIES,
    DEFAULTS,
    DEPTH_CONTEXTS,
    DEPTH_OUTPUT_TOKENS,
    DEPTH_REPEATS,
    SESSION_SHAPE,
    BenchOptions,
)
from flashspark.cli import console, exit_codes
from flashspark.cli.common import (
    apply,
    finish,
    handle_errors,
    json_option,
    out_option,
    parse_levels,
    recipe_options,
    resolve_run,
    run,
    target_options,
)
from flashspark.cli.console import escape
from flashspark.errors import InputError

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from flashspark.bench.declared import WorkloadRun
    from flashspark.bench.depth import DepthPoint, DepthResults
    from flashspark.bench.records import RequestRecord
    from flashspark.bench.results import SloCheck
    from flashspark.bench.runner import BenchRun, CellPlan
    from flashspark.bench.sessions import SessionsResults, TurnRow
    from flashspark.bench.stats import CellSummary
    from flashspark.bench.tokens import Counter


def process_count(ctx: click.Context, param: click.Parameter, value: str | int) -> int | str:
    """--processes: a number of client processes (1-64) or 'auto'."""
    if value == "auto":
        return "auto"
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number of processes nor 'auto'") from None
    if not 1 <= number <= 64:
        raise click.BadParameter(f"{number} is outside 1-64")
    return number


@click.group("bench")
def bench_group() -> None:
    """Measure throughput and latency with honest definitions (per-token rates, usage counts, warm-up)."""


bench_options = apply(
    [
        recipe_options,
        target_options,
        click.option(
            "--categories",
            default=",".join(DEFAULTS.categories),
            show_default=True,
            help=f"Comma list of prompt categories: {', '.join(CATEGORIES)}.",
        ),
        click.option(
            "--max-tokens",
            "--output-tokens",
            "max_tokens",
            type=click.IntRange(min=1),
            default=DEFAULTS.max_tokens,
            show_default=True,
            help="Tokens per reply (exactly, unless --no-ignore-eos).",
        ),
        click.option(
            "--input-tokens",
            type=click.IntRange(min=1),
            default=None,
            help="Every prompt exactly this many tokens, counted by the server's /tokenize (replaces the categories).",
        ),
        click.option(
            "--tokenizer",
            type=click.Path(path_type=Path, file_okay=False, exists=True),
            default=None,
            help="The model's tokenizer folder: counts --input-tokens where the server has no POST /tokenize.",
        ),
        click.option(
            "--dataset",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            default=None,
            help="Prompts from a JSONL of chat requests or a ShareGPT file (replaces the categories).",
        ),
        click.option(
            "--extra-body",
            default=None,
            metavar="JSON",
            help="Fields merged into every request, e.g. '{\"top_k\": 1}'.",
        ),
        click.option(
            "--header",
            "headers",
            multiple=True,
            metavar="NAME:VALUE",
            help="A header sent with every request (repeatable); credentials are masked in results.",
        ),
        click.option(
            "--warmup",
            type=click.IntRange(min=0),
            default=DEFAULTS.warmup_requests,
            show_default=True,
            help="Warm-up requests per category per cell.",
        ),
        click.option("--no-ignore-eos", is_flag=True, help="Let requests stop at EOS (default: fixed length)."),
        click.option(
            "--processes",
            callback=process_count,
            metavar="N|auto",
            default=str(DEFAULTS.processes),
            show_default=True,
            help="Client processes per cell (past one client core; requests split round-robin), or 'auto': "
            "from each cell's offered chunk rate and one process's calibrated capacity.",
        ),
        click.option(
            "--calibrate/--no-calibrate",
            default=DEFAULTS.calibrate,
            show_default=True,
            help="Measure the client's own timing error at each cell's stream count before the run.",
        ),
        out_option("requests.jsonl, results.json and summary.csv"),
        json_option,
    ]
)


def run_bench_command(shape: str, cells: list[CellPlan], *, rounds: int, as_json: bool, **common: Any) -> None:
    """What every `bench` shape shares: target, options, run directory, progress, exit status."""
    from flashspark.bench.runner import run_bench_session

    categories = tuple(c.strip() for c in str(common["categories"]).split(",") if c.strip())
    if common["input_tokens"] is not None and common["dataset"] is not None:
        raise InputError("--input-tokens and --dataset both choose the prompts", key="--dataset", fix="give one")
    if common["processes"] == "auto" and (not common["calibrate"] or common["warmup"] < 1):
        raise InputError(
            "--processes auto needs the calibration (one process's capacity) and a warm-up (a stream's rate)",
            key="--processes",
            value="auto",
            fix="drop --no-calibrate and keep --warmup at 1 or more, or give a number of processes",
        )
    headers = parse_headers(common["headers"])
    options = BenchOptions(
        model=common["model"],
        categories=categories,
        max_tokens=common["max_tokens"],
        warmup_requests=common["warmup"],
        rounds=rounds,
        ignore_eos=not common["no_ignore_eos"],
        processes=common["processes"],
        calibrate=common["calibrate"],
        input_tokens=common["input_tokens"],
        dataset=str(common["dataset"]) if common["dataset"] is not None else None,
        extra_body=parse_extra_body(common["extra_body"]),
        headers=headers,
    )
    target, run_dir = resolve_run(
        common["config"], common["profile"], common["sets"], common["base_url"], common["timeouts"], common["out"],
        f"bench-{shape}",
    )  # fmt: skip
    server = target.server_recipe
    progress = BenchProgress(total=sum(len(c.arrivals_s) for c in cells), quiet=as_json)

    async def go() -> BenchRun:
        async with target.client(headers) as client, tokenizer_files(common["tokenizer"]) as files:
            with progress:
                return await run_bench_session(
                    client,
                    cells,
                    shape=shape,
                    options=options,
                    run_dir=run_dir,
                    pins=target.pins,
                    boot=target.boot,
                    recipe=server.public_dict() if server is not None else None,
                    on_record=progress.request,
                    on_cell=progress.cell,
                    tokenizer=files,
                )

    result = run(go())

    def show() -> None:
        console.print_plain(
            f"results: {result.results}  requests: {result.requests}  summary: {result.summary}\n"
            f"report: flashspark report {result.run_dir}"
        )

    finish(result, as_json, show, ok=result.failed == 0, fail_code=exit_codes.CHECK_FAILED)


@contextlib.asynccontextmanager
async def tokenizer_files(folder: Path | None) -> AsyncIterator[Counter | None]:
    """The model's tokenizer files as a token counter (the engine's transformers), when a folder is given."""
    if folder is None:
        yield None
        return
    from flashspark.engine import engine_dir, require_engine
    from flashspark.engine.tokens import TokenizerFiles
    from flashspark.recipe import default_home

    engine = require_engine(engine_dir(os.environ, default_home(os.environ)))
    async with TokenizerFiles(engine, folder) as files:
        yield files


def parse_headers(given: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for item in given:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise InputError(
                f"{item!r} is not NAME:VALUE", key="--header", fix="write e.g. --header 'X-Team: research'"
            )
        headers[name.strip()] = value.strip()
    return headers


def parse_extra_body(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--extra-body is not JSON: {exc}", key="--extra-body", value=text) from None
    if not isinstance(value, dict):
        raise InputError("--extra-body must be a JSON object", key="--extra-body", value=text, fix='e.g. {"top_k": 1}')
    return value


@bench_group.command("static")
@bench_options
@click.option("--concurrency", "levels", default="1,4,8,16", show_default=True, help="Comma list of levels.")
@click.option(
    "--rounds",
    type=click.IntRange(1, 20),
    default=DEFAULTS.rounds,
    show_default=True,
    help="Rounds per level (report and compare use their best and spread).",
)
@handle_errors
def bench_static(levels: str, rounds: int, as_json: bool, **common: Any) -> None:
    """A concurrency ladder: each level's requests released together."""
    from flashspark.bench.runner import static_cells

    run_bench_command("static", static_cells(parse_levels(levels), rounds), rounds=rounds, as_json=as_json, **common)


@bench_group.command("staggered")
@bench_options
@click.option("--requests", "count", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--gap", type=click.FloatRange(min=0), default=0.4, show_default=True, help="Seconds between arrivals.")
@handle_errors
def bench_staggered(count: int, gap: float, as_json: bool, **common: Any) -> None:
    """N requests with a fixed gap: independent arrivals mixing prefill and decode."""
    from flashspark.bench.runner import staggered_cells

    run_bench_command("staggered", staggered_cells(count, gap), rounds=1, as_json=as_json, **common)


@bench_group.command("rate")
@bench_options
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), required=True, help="Mean arrivals per second (Poisson)."
)
@click.option("--requests", "count", type=click.IntRange(1, 100000), default=32, show_default=True)
@click.option("--max-concurrency", type=click.IntRange(1, 4096), default=None, help="Cap on requests in flight.")
@click.option("--seed", type=int, default=0, show_default=True)
@handle_errors
def bench_rate(rate: float, count: int, max_concurrency: int | None, seed: int, as_json: bool, **common: Any) -> None:
    """Poisson arrivals at RATE requests per second, optionally capped in flight."""
    from flashspark.bench.runner import rate_cells

    run_bench_command("rate", rate_cells(rate, count, max_concurrency, seed), rounds=1, as_json=as_json, **common)


@bench_group.command("workload")
@recipe_options
@target_options
@click.option(
    "--workload",
    "workload_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The declared traffic (the TOML `tune` and `plan --predict-slo` read): its [traffic] and [tune] rounds.",
)
@click.option(
    "--predicted",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="An SLO prediction of this traffic (`flashspark plan --predict-slo --save FILE`): printed beside "
    "the measurement with the error, and kept in results.json.",
)
@out_option("requests.jsonl, results.json and summary.csv")
@json_option
@handle_errors
def bench_workload(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    workload_file: Path,
    predicted: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """The traffic a workload file declares: its warm-up rounds, then its measured rounds.

    \b
    With --predicted, the p50/p95 TTFT and per-stream decode the planner predicted
    are printed beside what the measured rounds gave, with the error of each.
    """
    from flashspark.bench.declared import measure_workload, read_prediction, traffic_cells
    from flashspark.recipe.workload import load_workload

    workload = load_workload(workload_file)
    prediction = read_prediction(predicted) if predicted is not None else None
    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "bench-workload")
    server = target.server_recipe
    cells = traffic_cells(workload)
    progress = BenchProgress(total=sum(len(c.arrivals_s) for c in cells), quiet=as_json)

    async def go() -> WorkloadRun:
        async with target.client() as client:
            with progress:
                return await measure_workload(
                    client,
                    workload,
                    run_dir=run_dir,
                    pins=target.pins,
                    boot=target.boot,
                    recipe=server.public_dict() if server is not None else None,
                    prediction=prediction,
                    model=model,
                    on_record=progress.request,
                    on_cell=progress.cell,
                )

    measured = run(go())
    result, check = measured.run, measured.slo

    def show() -> None:
        if check is not None:
            print_slo_check(check)
        console.print_plain(
            f"results: {result.results}  requests: {result.requests}\nreport: flashspark report {result.run_dir}"
        )

    finish(measured, as_json, show, ok=result.failed == 0, fail_code=exit_codes.CHECK_FAILED)


def print_slo_check(check: SloCheck) -> None:
    table = console.table(title=f"predicted beside measured ({check.measured_requests} requests measured)")
    for column in ("number", "predicted", "measured", "error", f"within {check.target_error:.0%}"):
        table.add_column(column)
    for n in check.numbers:
        table.add_row(
            n.name,
            f"{n.predicted:,.3f}",
            "–" if n.measured is None else f"{n.measured:,.3f}",
            "–" if n.error is None else f"{n.error:+.1%}",
            {True: "yes", False: "NO", None: "–"}[n.within_target],
        )
    console.out.print(table)
    for warning in check.warnings:
        console.print_plain(f"warning: {escape(warning)}")


@bench_group.command("depth")
@recipe_options
@target_options
@click.option(
    "--contexts",
    default=DEPTH_CONTEXTS,
    show_default=True,
    help="Prompt depths in tokens (k = 1024, m = 1024 x 1024); capped at the server's max_model_len.",
)
@click.option(
    "--output-tokens",
    type=click.IntRange(min=2),
    default=DEPTH_OUTPUT_TOKENS,
    show_default=True,
    help="Decode per point.",
)
@click.option(
    "--repeats", type=click.IntRange(1, 20), default=DEPTH_REPEATS, show_default=True, help="Requests per depth."
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="The model's tokenizer folder: counts the prompts where the server has no POST /tokenize.",
)
@out_option("depth.json and depth.jsonl")
@json_option
@handle_errors
def bench_depth(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    contexts: str,
    output_tokens: int,
    repeats: int,
    tokenizer: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """TTFT, cold prefill rate and decode rate against context depth, one exact-length prompt at a time.

    \b
    Each prompt is exactly N tokens as the server counts them (POST /tokenize with the
    chat template) and starts with a salt unique to the point, so the prefix cache
    cannot help: every prefill is cold (/metrics prefix-cache hits are recorded to
    show it). TTFT grows to minutes at 100K+ tokens: raise --first-byte-timeout there.
    """
    from flashspark.bench.depth import parse_contexts, run_depth

    depths = parse_contexts(contexts)
    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "bench-depth")
    server = target.server_recipe

    async def go() -> DepthResults:
        async with target.client() as client, tokenizer_files(tokenizer) as files:
            return await run_depth(
                client,
                depths=depths,
                run_dir=run_dir,
                model=model,
                output_tokens=output_tokens,
                repeats=repeats,
                max_model_len=server.engine.max_model_len if server is not None else None,
                recipe=server.public_dict() if server is not None else None,
                pins=target.pins,
                on_point=None if as_json else print_depth_point,
                tokenizer=files,
            )

    result = run(go())

    def show() -> None:
        if result.capped:
            console.err.print(f"[yellow]capped:[/] {escape(result.capped)}")
        print_depth(result)
        console.print_plain(f"results: {run_dir / 'depth.json'}\nreport: flashspark report {run_dir}")

    finish(result, as_json, show, ok=result.ok, fail_code=exit_codes.CHECK_FAILED)


def _shape_option(name: str, kind: click.ParamType[Any], help_text: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    key = name.removeprefix("--").replace("-", "_")
    default = getattr(SESSION_SHAPE, key if key != "think_time" else "think_time_s")
    return click.option(name, type=kind, default=None, help=f"{help_text} [default: {default}]")


@bench_group.command("sessions")
@recipe_options
@target_options
@click.option(
    "--shape",
    "shape_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A TOML session shape (the keys below, at the top or under [session]); flags override it.",
)
@_shape_option("--agents", click.IntRange(1, 1024), "Concurrent agents.")
@_shape_option("--turns", click.IntRange(1, 1000), "Requests per agent.")
@_shape_option("--system-tokens", click.IntRange(min=0), "Shared system prompt (words, ~tokens).")
@_shape_option("--task-tokens", click.IntRange(min=0), "Each agent's first message.")
@_shape_option("--growth-tokens", click.IntRange(min=0), "Tool result appended after every turn.")
@_shape_option("--output-tokens", click.IntRange(min=1), "Decode per turn.")
@_shape_option("--think-time", click.FloatRange(min=0), "Seconds between turns.")
@out_option("sessions.json and sessions.jsonl")
@json_option
@handle_errors
def bench_sessions(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    shape_file: Path | None,
    out: Path | None,
    as_json: bool,
    **shape: Any,
) -> None:
    """Agents whose context grows turn by turn: per-turn TTFT and the server's prefix-cache hit rate.

    \b
    Every agent resends its whole conversation each turn (shared system prompt,
    its task, its replies, a tool result per turn). The agents advance in lockstep
    so the /metrics prefix-cache counters read around each turn belong to it.
    """
    from flashspark.bench.sessions import load_shape, run_sessions

    session_shape = load_shape(shape_file, **{k if k != "think_time" else "think_time_s": v for k, v in shape.items()})
    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "bench-sessions")
    server = target.server_recipe

    async def go() -> SessionsResults:
        async with target.client() as client:
            return await run_sessions(
                client,
                shape=session_shape,
                run_dir=run_dir,
                model=model,
                recipe=server.public_dict() if server is not None else None,
                pins=target.pins,
                on_turn=None if as_json else print_turn,
            )

    result = run(go())

    def show() -> None:
        print_sessions(result)
        console.print_plain(f"results: {run_dir / 'sessions.json'}\nreport: flashspark report {run_dir}")

    finish(result, as_json, show, ok=result.ok, fail_code=exit_codes.CHECK_FAILED)


# --- what people read -----------------------------------------------------------------------


def print_depth_point(point: DepthPoint) -> None:
    if not point.ok:
        console.err.print(f"  [red]✗[/] depth {point.depth:,}: {escape(point.error or '')}")
        return
    console.err.print(
        f"  depth {point.depth:,} ({point.prompt_tokens:,} billed): TTFT {point.ttft_s or 0:.3f} s, "
        f"prefill {point.prefill_tokens_per_s or 0:,.0f} tok/s, decode {point.decode_tokens_per_s or 0:.1f} tok/s"
    )


def _hit_rate(row: TurnRow) -> str:
    rate = row.hit_rate
    return f"{rate:.1%}" if rate is not None else "-"


def print_turn(row: TurnRow) -> None:
    console.err.print(
        f"  turn {row.turn}: {row.ok}/{row.requests} ok, context {row.prompt_tokens_mean or 0:,.0f} tokens, "
        f"TTFT p50 {row.ttft_p50_s or 0:.3f} s, prefix-cache hits {_hit_rate(row)}"
    )


def print_sessions(result: SessionsResults) -> None:
    shape = result.shape
    table = console.table(title=f"bench sessions: {shape.agents} agents x {shape.turns} turns, {result.model}")
    for column in ("turn", "ok", "context tokens", "TTFT p50 s", "TTFT max s", "decode tok/s", "cache hits"):
        table.add_column(column, justify="right")
    for row in result.turns:
        table.add_row(
            str(row.turn),
            f"{row.ok}/{row.requests}",
            f"{row.prompt_tokens_mean:,.0f}" if row.prompt_tokens_mean is not None else "-",
            f"{row.ttft_p50_s:.3f}" if row.ttft_p50_s is not None else "-",
            f"{row.ttft_max_s:.3f}" if row.ttft_max_s is not None else "-",
            f"{row.decode_tokens_per_s_p50:.1f}" if row.decode_tokens_per_s_p50 is not None else "-",
            _hit_rate(row),
        )
    console.out.print(table)


def print_depth(result: DepthResults) -> None:
    table = console.table(title=f"bench depth: {result.model}, {result.output_tokens} output tokens per point")
    for column in ("depth", "billed", "ok", "TTFT s", "prefill tok/s", "decode tok/s"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(
            f"{row.depth:,}",
            f"{row.prompt_tokens:,}" if row.prompt_tokens is not None else "-",
            f"{row.ok}/{row.requests}",
            f"{row.ttft_s:.3f}" if row.ttft_s is not None else "-",
            f"{row.prefill_tokens_per_s:,.0f}" if row.prefill_tokens_per_s is not None else "-",
            f"{row.decode_tokens_per_s:.1f}" if row.decode_tokens_per_s is not None else "-",
        )
    console.out.print(table)


def bench_request_line(record: RequestRecord) -> str:
    """One finished request as a plain line."""
    if record.error is not None:
        return f"  ✗ {record.cell} #{record.index} {record.category}: {record.error}"
    rate = f"{record.decode_tokens_per_s:.1f}" if record.decode_tokens_per_s is not None else "-"
    ttft = f"{record.ttft_s * 1000:.0f}" if record.ttft_s is not None else "-"
    head = f"  {record.cell} #{record.index} {record.category}"
    return f"{head}: {record.output_tokens} tokens, TTFT {ttft} ms, {rate} tok/s"


def print_bench_cell(cell: CellSummary) -> None:
    acceptance = cell.spec_decode_acceptance_rate
    console.err.print(
        f"[bold]{escape(cell.cell)}[/]: {cell.completed}/{cell.requests} ok, "
        f"{cell.output_throughput:.1f} tok/s aggregate, per-stream "
        f"{cell.per_stream_decode_tokens_per_s_mean or 0:.1f} tok/s, TTFT p50 "
        f"{cell.median_ttft_ms or 0:.0f} ms" + (f", acceptance {acceptance:.3f}" if acceptance is not None else "")
    )
    for warning in cell.warnings:
        console.err.print(f"  [yellow]warning:[/] {escape(warning)}")
    for reason in cell.client_limited:
        console.err.print(f"  [yellow]client-limited:[/] {escape(reason)}")


class BenchProgress:
    """Live progress on a terminal (a Rich bar); plain lines when stderr is a file or a pipe."""

    def __init__(self, *, total: int, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.live = console.err.is_terminal and not quiet
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console.err.real,
                transient=True,
                refresh_per_second=4,  # each refresh holds the GIL the timing loop needs
            )
            if self.live
            else None
        )
        self._task = self._progress.add_task("requests", total=total) if self._progress else None

    def __enter__(self) -> BenchProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def request(self, record: RequestRecord) -> None:
        # Called on the event loop that times the other streams: a Rich print costs ~0.6 ms here (a
        # 256-request wave would stall the loop 150 ms), a plain write ~5 µs.
        if self.quiet:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=record.cell)
            if record.error is not None:
                self._progress.console.print(bench_request_line(record), markup=False, style="red")
        else:
            sys.stderr.write(bench_request_line(record) + "\n")

    def cell(self, summary: CellSummary) -> None:
        if not self.quiet:
            print_bench_cell(summary)
