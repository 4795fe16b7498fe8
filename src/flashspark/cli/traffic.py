"""`flashspark record` and `flashspark replay`: capture a harness's traffic, send it again, judge the answers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flashspark.cli import console, exit_codes
from flashspark.cli.common import (
    finish,
    handle_errors,
    json_option,
    key_from_env,
    out_option,
    recipe_options,
    resolve_run,
    run,
    stop_on_signals,
    target_options,
)
from flashspark.cli.console import escape
from flashspark.errors import InputError

if TYPE_CHECKING:
    from flashspark.traffic.exchange import Exchange
    from flashspark.traffic.proxy import RecordSummary
    from flashspark.traffic.replay import ReplayOutcome, ReplayResults

DEFAULT_LISTEN = "127.0.0.1:8890"  # garble_tap's port, so a harness set up for it needs no change


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise InputError(f"{text!r} is not HOST:PORT", key="--listen", value=text, fix=f"write e.g. {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


@click.command("record")
@recipe_options
@click.option("--upstream", default=None, help="The server to record in front of (default: the deployment).")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT harnesses connect to.")
@click.option(
    "--key-env",
    default=None,
    metavar="NAME",
    help="Environment variable holding a key harnesses must send as a bearer token (needed beyond loopback).",
)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after SECONDS.")
@out_option("exchanges.jsonl, flagged.jsonl and record.json")
@json_option
@handle_errors
def record_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    upstream: str | None,
    listen: str,
    key_env: str | None,
    duration: float | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Record a harness's traffic through a transparent proxy (answers streamed through as they come).

    \b
    Point the harness at the printed URL. Every exchange is written to
    exchanges.jsonl with its answer reconstructed (content, reasoning, tool
    calls) and judged; judged-bad ones also to flagged.jsonl, with the full
    request for `flashspark replay`. Secrets are masked. Ctrl-C (or --duration)
    stops it and writes record.json with the proxy's added latency per chunk.
    """
    from flashspark.traffic.proxy import record

    host, port = parse_listen(listen)
    key = key_from_env(key_env)
    target, run_dir = resolve_run(config, profile, sets, upstream, {}, out, "record")

    def started(url: str) -> None:
        console.err.print(f"recording: {escape(url)} -> {escape(target.base_url)}  (into {escape(str(run_dir))})")

    async def go() -> RecordSummary:
        # Ctrl-C and SIGTERM are the ordinary end of a recording: they stop it, they do not fail it.
        stop = stop_on_signals()
        async with target.client() as client:
            return await record(
                client,
                host=host,
                port=port,
                out_dir=run_dir,
                key=key,
                duration_s=duration,
                stop=stop,
                on_start=started,
                on_exchange=None if as_json else print_exchange,
            )

    summary = run(go())

    def show() -> None:
        latency = summary.added_latency
        added = f"added p50 {latency.p50_us:.0f} µs, p99 {latency.p99_us:.0f} µs per chunk" if latency else ""
        console.print_plain(
            f"{summary.exchanges} exchanges ({summary.flagged} flagged, {summary.errors} failed) {added}\n"
            f"recorded: {run_dir / 'exchanges.jsonl'}\nreplay: flashspark replay {run_dir / 'exchanges.jsonl'}"
        )

    finish(summary, as_json, show)


def print_exchange(exchange: Exchange) -> None:
    mark = "✗" if exchange.error else ("!" if exchange.flagged else "✓")
    detail = exchange.error or ", ".join(f["detector"] for f in exchange.flags) or (exchange.verdict or "")
    ttft = f" TTFT {exchange.ttft_s:.3f} s" if exchange.ttft_s is not None else ""
    sys.stderr.write(f"  {mark} {exchange.method} {exchange.path} {exchange.status or '-'}{ttft} {detail}\n")


@click.command("replay")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@recipe_options
@target_options
@click.option(
    "--timing",
    type=click.Choice(["original", "fast"]),
    default="fast",
    show_default=True,
    help="The recorded spacing between requests, or each as soon as a slot is free.",
)
@click.option("--concurrency", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--salt", is_flag=True, help="Put a unique salt before each system prompt: every prefill cold.")
@out_option("replay.json and replay.jsonl")
@json_option
@handle_errors
def replay_command(
    file: Path,
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    timeouts: dict[str, float | None],
    timing: str,
    concurrency: int,
    salt: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Send recorded chat requests (exchanges.jsonl or flagged.jsonl) again and judge every answer.

    \b
    Verdicts: healthy; suspicious (opens mid-sentence or with a heading, recites
    the system prompt); garbled (the garble detectors); error. Exit 4 unless
    every answer is healthy.
    """
    from flashspark.traffic.exchange import read_exchanges
    from flashspark.traffic.replay import run_replay

    exchanges = read_exchanges(file)
    target, run_dir = resolve_run(config, profile, sets, base_url, timeouts, out, "replay")

    async def go() -> ReplayResults:
        async with target.client() as client:
            return await run_replay(
                client,
                exchanges,
                source=str(file),
                run_dir=run_dir,
                model=model,
                timing="original" if timing == "original" else "fast",
                concurrency=concurrency,
                salt=salt,
                pins=target.pins,
                on_outcome=None if as_json else print_outcome,
            )

    result = run(go())

    def show() -> None:
        counts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(result.verdicts.items()))
        console.print_plain(
            f"{len(result.outcomes)} replayed ({counts or 'nothing to replay'}), {result.skipped} skipped\n"
            f"results: {run_dir / 'replay.json'}\nreport: flashspark report {run_dir}"
        )

    finish(result, as_json, show, ok=result.ok, fail_code=exit_codes.CHECK_FAILED)


def print_outcome(outcome: ReplayOutcome) -> None:
    detail = outcome.error or ", ".join(f"{f['detector']}: {f['detail']}" for f in outcome.flags)
    ttft = f"TTFT {outcome.ttft_s:.3f} s" if outcome.ttft_s is not None else ""
    sys.stderr.write(f"  #{outcome.index} {outcome.verdict} {ttft} {detail}\n")
