"""The gates: `smoke`, `sanity`, `tools`, `longdecode`, `correctness` and `validate`, against the deployment or
any --base-url."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flashspark.cli import console
from flashspark.cli.common import (
    finish,
    handle_errors,
    json_option,
    out_option,
    parse_levels,
    recipe_options,
    resolve_run,
    resolve_target,
    run,
    target_options,
)
from flashspark.cli.console import escape
from flashspark.gates.options import CHURN_MODES, GATES, SANITY, SMOKE
from flashspark.recipe.model import TOOL_CASES

if TYPE_CHECKING:
    from flashspark.gates.correctness import CorrectnessReport
    from flashspark.gates.longdecode import LongDecodeReport, StreamVerdict
    from flashspark.gates.sanity import LevelSummary, SanityReport
    from flashspark.gates.smoke import SmokeReport
    from flashspark.gates.tools import ToolsReport
    from flashspark.gates.validate import GateResult, ValidationResult


@click.command("smoke")
@recipe_options
@target_options
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), default=SMOKE.concurrency, show_default=True)
@click.option("--expect", default=SMOKE.expect, show_default=True, help="The exact reply each request must return.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=SMOKE.max_tokens, show_default=True)
@json_option
@handle_errors
def smoke_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    concurrency: int,
    expect: str,
    max_tokens: int,
    as_json: bool,
) -> None:
    """N concurrent deterministic requests; each must return EXPECT exactly. Exit 4 on any miss."""
    from flashspark.gates.smoke import run_smoke

    target, _ = resolve_target(config, profile, sets, base_url, timeouts)

    async def go() -> SmokeReport:
        async with target.client() as client:
            return await run_smoke(client, concurrency=concurrency, expect=expect, model=model, max_tokens=max_tokens)

    report = run(go())
    finish(report, as_json, lambda: print_smoke(report), ok=report.ok)


@click.command("sanity")
@recipe_options
@target_options
@click.option(
    "--concurrency",
    "levels",
    default=",".join(map(str, SANITY.levels)),
    show_default=True,
    help="Comma list of levels.",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=SANITY.max_tokens, show_default=True)
@click.option("--strict", "strict_cjk", is_flag=True, help="Any CJK/kana/hangul character fails a reply.")
@out_option("sanity.jsonl")
@json_option
@handle_errors
def sanity_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    levels: str,
    max_tokens: int,
    strict_cjk: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """The agent garble gate: agent-shaped prompts at each concurrency level, every reply checked.

    \b
    Detectors: CJK/kana/hangul drift, character runs, repeated windows, collapsed
    compression, leaked special tokens, leaked tool/think/schema tags (outside code),
    empty replies with billed tokens, reasoning-only replies, length with no content.
    Exit 4 when any request is bad; every request's evidence goes to sanity.jsonl.
    """
    from flashspark.gates.sanity import run_sanity

    chosen = parse_levels(levels)
    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "sanity")

    async def go() -> SanityReport:
        async with target.client() as client:
            return await run_sanity(
                client,
                levels=chosen,
                model=model,
                max_tokens=max_tokens,
                strict_cjk=strict_cjk,
                evidence_path=run_dir / "sanity.jsonl",
                on_level=None if as_json else print_sanity_level,
            )

    report = run(go())
    finish(report, as_json, lambda: print_sanity(report), ok=report.ok)


@click.command("tools")
@recipe_options
@target_options
@click.option("--case", "cases", type=click.Choice(TOOL_CASES), multiple=True, help="Case(s) to run; default: all.")
@click.option(
    "--expect",
    "expected",
    type=click.Choice(TOOL_CASES),
    multiple=True,
    help="Case(s) that must pass; default: the profile's gates.tools_expected (all, for a bare --base-url).",
)
@out_option("tools.json")
@json_option
@handle_errors
def tools_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    cases: tuple[str, ...],
    expected: tuple[str, ...],
    out: Path | None,
    as_json: bool,
) -> None:
    """The tool-call gate: OpenAI tools round trips (auto, required, named, parallel, follow-up), streamed.

    \b
    Checks per case: the calls parse, arguments are JSON matching the declared schema,
    no tool markup or special tokens in content, the finish reason is the API's, the
    follow-up answers from the tool's result. Exit 4 when an expected case fails; the
    cases a profile's model is not expected to pass are reported without failing.
    """
    from flashspark.gates.tools import run_tools

    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "tools")
    server = target.server_recipe
    must = expected or (tuple(server.gates.tools_expected) if server is not None else TOOL_CASES)

    async def go() -> ToolsReport:
        async with target.client() as client:
            return await run_tools(
                client, model=model, cases=cases or TOOL_CASES, expected=must, report_path=run_dir / "tools.json"
            )

    report = run(go())

    def show() -> None:
        print_tools(report)
        console.print_plain(f"results: {run_dir / 'tools.json'}\nreport: flashspark report {run_dir}")

    finish(report, as_json, show, ok=report.ok)


@click.command("longdecode")
@recipe_options
@target_options
@click.option("--tokens", type=click.IntRange(min=16), default=None, help="Tokens per generation (profile's default).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), default=None, help="Generations at once.")
@click.option("--window", "window_tokens", type=click.IntRange(min=8), default=None, help="Tokens per checked window.")
@click.option("--strict", "strict_cjk", is_flag=True, help="Any CJK/kana/hangul character fails a window.")
@out_option("longdecode.json and longdecode.jsonl")
@json_option
@handle_errors
def longdecode_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    tokens: int | None,
    concurrency: int | None,
    window_tokens: int | None,
    strict_cjk: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """The long-decode gate: long generations at the profile's live concurrency, each window of tokens checked
    by every garble detector; names the first bad window. Exit 4 on any bad stream.

    Defaults from the profile (gates.longdecode_*): 16,384 tokens at max_num_seqs on the DSpark profiles,
    256 at 2 on local-cpu. Raise --request-timeout for very long generations on a slow server.
    """
    from flashspark.gates.longdecode import run_longdecode
    from flashspark.recipe.model import GateSettings

    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "longdecode")
    server = target.server_recipe
    settings = server.gates if server is not None else GateSettings()

    async def go() -> LongDecodeReport:
        async with target.client() as client:
            return await run_longdecode(
                client,
                model=model,
                tokens=tokens or settings.longdecode_tokens,
                concurrency=concurrency or (server.longdecode_concurrency if server is not None else 1),
                window_tokens=window_tokens or settings.longdecode_window_tokens,
                strict_cjk=strict_cjk,
                evidence_path=run_dir / "longdecode.jsonl",
                report_path=run_dir / "longdecode.json",
                on_stream=None if as_json else print_longdecode_stream,
            )

    report = run(go())
    finish(report, as_json, lambda: print_longdecode(report, run_dir / "longdecode.jsonl"), ok=report.ok)


@click.command("correctness")
@recipe_options
@target_options
@click.option("--mode", "modes", type=click.Choice(CHURN_MODES), multiple=True, help="Churn mode(s); default: all.")
@click.option(
    "--acceptance-floor",
    type=click.FloatRange(0, 1),
    default=None,
    help="Minimum acceptance over the churn window (default: per drafter, from the recipe).",
)
@json_option
@handle_errors
def correctness_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    modes: tuple[str, ...],
    acceptance_floor: float | None,
    as_json: bool,
) -> None:
    """A deterministic victim, alone then under churn: byte-identical or exit 4 with the first difference."""
    from flashspark.gates.correctness import default_floor, run_correctness

    target, _ = resolve_target(config, profile, sets, base_url, timeouts)
    server = target.server_recipe
    floor = acceptance_floor
    if floor is None and server is not None:
        floor = default_floor(server.speculative.method)

    async def go() -> CorrectnessReport:
        async with target.client() as client:
            return await run_correctness(client, model=model, modes=modes or CHURN_MODES, acceptance_floor=floor)

    report = run(go())
    finish(report, as_json, lambda: print_correctness(report), ok=report.ok)


@click.command("validate")
@recipe_options
@target_options
@click.option("--only", multiple=True, help=f"Run only these gates ({', '.join(GATES)}). Repeatable.")
@click.option("--skip", multiple=True, help="Skip these gates. Repeatable.")
@out_option("validation.json")
@json_option
@handle_errors
def validate_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    only: tuple[str, ...],
    skip: tuple[str, ...],
    out: Path | None,
    as_json: bool,
) -> None:
    """Every gate in order: readiness, smoke, sanity, tools, longdecode, correctness, speculative. Exit 4 when
    any fails."""
    from flashspark.gates.validate import options_from_recipe, run_validate, select_gates

    gates = select_gates(only, skip)
    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "validate")
    options = options_from_recipe(target.server_recipe, model=model, gates=gates)

    async def go() -> ValidationResult:
        async with target.client() as client:
            return await run_validate(
                client,
                options=options,
                run_dir=run_dir,
                recipe=target.server_recipe,
                pins=target.pins,
                on_gate=None if as_json else print_gate,
            )

    result = run(go())
    finish(result, as_json, lambda: print_validation(result, run_dir / "validation.json"), ok=result.ok)


# --- what people read -----------------------------------------------------------------------


def print_smoke(report: SmokeReport) -> None:
    table = console.table(title=f"smoke: expect {report.expect!r} from {report.model} at {report.base_url}")
    for column in ("#", "ok", "ttft s", "e2e s", "tokens", "reply / error"):
        table.add_column(column)
    for r in report.requests:
        table.add_row(
            str(r.index),
            "[green]yes[/]" if r.ok else "[red]no[/]",
            f"{r.ttft_s:.3f}" if r.ttft_s is not None else "-",
            f"{r.e2e_s:.3f}" if r.e2e_s is not None else "-",
            str(r.completion_tokens),
            escape(r.error or repr(r.content)),
        )
    console.out.print(table)
    verdict = "[green]pass[/]" if report.ok else "[bold red]FAIL[/]"
    console.out.print(f"{verdict}: {report.passed}/{report.concurrency} exact in {report.wall_s:.2f} s")


def print_sanity_level(level: LevelSummary) -> None:
    fired = f" fired: {level.detectors_fired}" if level.detectors_fired else ""
    console.err.print(
        f"  c{level.concurrency}: {level.good}/{level.total} good, {level.errors} errors, "
        f"{level.aggregate_tokens_per_s:.1f} tok/s aggregate{escape(fired)}"
    )


def print_sanity(report: SanityReport) -> None:
    table = console.table(
        title=f"sanity: {report.model}, max_tokens {report.max_tokens}" + (", strict CJK" if report.strict_cjk else "")
    )
    for column in ("concurrency", "success", "bad", "errors", "agg tok/s", "per-req tok/s", "detectors fired"):
        table.add_column(column)
    for s in report.levels:
        per = f"{s.per_request_tokens_per_s_mean:.1f}" if s.per_request_tokens_per_s_mean is not None else "-"
        table.add_row(
            str(s.concurrency),
            s.success,
            str(s.bad),
            str(s.errors),
            f"{s.aggregate_tokens_per_s:.1f}",
            per,
            escape(", ".join(f"{k} x{v}" for k, v in s.detectors_fired.items()) or "-"),
        )
    console.out.print(table)
    console.out.print(f"evidence: {report.evidence_path}")
    console.out.print(
        "[green]pass[/]: no bad outputs" if report.ok else "[bold red]FAIL[/]: bad outputs (see detectors)"
    )


def print_tools(report: ToolsReport) -> None:
    table = console.table(title=f"tools: {report.model or 'default model'}, expected {', '.join(report.expected)}")
    for column in ("case", "status", "finish", "calls", "failed checks"):
        table.add_column(column)
    for case in report.cases:
        status = (
            "[green]pass[/]"
            if case.ok
            else ("[bold red]FAIL[/]" if case.expected else "[yellow]fail[/] (not expected)")
        )
        calls = ", ".join(
            f"{c['function'].get('name')}({_compact(c['function'].get('arguments'))})" for c in case.tool_calls
        )
        failed = "; ".join(f"{c.name}: {c.detail}" for c in case.checks if not c.ok)
        table.add_row(case.case, status, str(case.finish_reason), escape(calls or "-"), escape(failed or "-"))
    console.out.print(table)
    console.out.print("[green]pass[/]" if report.ok else "[bold red]FAIL[/]: an expected case failed")


def _compact(arguments: object) -> str:
    """Arguments on one line: re-serialised when they are JSON, else as sent; cut at 80 characters."""
    text = str(arguments or "")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def print_longdecode_stream(stream: StreamVerdict) -> None:
    state = "[green]clean[/]" if stream.ok else "[bold red]BAD[/]"
    rate = f"{stream.decode_tokens_per_s:.1f} tok/s" if stream.decode_tokens_per_s else "-"
    console.err.print(f"  stream {stream.index}: {state}, {stream.completion_tokens} tokens, {rate}")


def print_longdecode(report: LongDecodeReport, path: Path) -> None:
    table = console.table(
        title=f"longdecode: {report.tokens} tokens x {report.concurrency}, windows of {report.window_tokens} tokens"
    )
    for column in ("stream", "status", "tokens", "finish", "tok/s", "first bad window", "detectors"):
        table.add_column(column)
    for s in report.streams:
        bad = s.first_bad
        where = f"{bad.window.first_token}-{bad.window.end_token}" if bad else "-"
        fired = ", ".join(h["detector"] for h in bad.hits) if bad else "; ".join(s.problems) or "-"
        table.add_row(
            str(s.index),
            "[green]clean[/]" if s.ok else "[bold red]BAD[/]",
            str(s.completion_tokens),
            str(s.finish_reason),
            f"{s.decode_tokens_per_s:.1f}" if s.decode_tokens_per_s else "-",
            where,
            escape(fired),
        )
    console.out.print(table)
    console.out.print(
        f"{report.aggregate_tokens_per_s:.1f} tok/s aggregate over {report.wall_s:.1f} s; evidence: {path}"
    )
    console.out.print("[green]pass[/]" if report.ok else "[bold red]FAIL[/]: garble or a short/failed stream")


def print_correctness(report: CorrectnessReport) -> None:
    if report.reference_error:
        console.err.print(f"[bold red]reference request failed[/]: {escape(report.reference_error)}")
    for mode in report.modes:
        rate = "n/a" if mode.acceptance_rate is None else f"{mode.acceptance_rate:.3f}"
        floor = "none" if mode.acceptance_floor is None else f"{mode.acceptance_floor:.2f}"
        verdict = "[green]ok[/]" if mode.ok else "[bold red]FAIL[/]"
        console.out.print(
            f"{verdict} {mode.mode}: identical={mode.identical}, churn {mode.churn_requests} requests "
            f"({mode.churn_errors} errors), acceptance {rate} (floor {floor}), {mode.window_s:.1f} s"
        )
        if mode.divergence is not None:
            console.out.print(f"  first difference at offset {mode.divergence.offset}:")
            console.out.print(f"    reference: {escape(repr(mode.divergence.reference_window))}")
            console.out.print(f"    victim:    {escape(repr(mode.divergence.victim_window))}")
        if mode.victim_error:
            console.out.print(f"  victim error: {escape(mode.victim_error)}")
    console.out.print("[green]pass[/]" if report.ok else "[bold red]FAIL[/]")


_STATUS = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]", "error": "[bold red]ERROR[/]"}


def print_gate(result: GateResult) -> None:
    console.err.print(
        f"{_STATUS.get(result.status, result.status)} {result.name} ({result.duration_s:.1f} s): "
        f"{escape(result.summary)}"
    )


def print_validation(result: ValidationResult, path: Path) -> None:
    table = console.table(title=f"validate: {result.model} at {result.base_url} (vLLM {result.pins.vllm_version})")
    for column in ("gate", "status", "seconds", "summary"):
        table.add_column(column)
    for gate in result.gates:
        table.add_row(gate.name, _STATUS.get(gate.status, gate.status), f"{gate.duration_s:.1f}", escape(gate.summary))
    console.out.print(table)
    console.out.print(f"evidence: {path}")
    console.out.print("[green]all gates pass[/]" if result.ok else "[bold red]validation FAILED[/]")
