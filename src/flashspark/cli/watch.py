"""`flashspark monitor` (a live view of a deployment) and `flashspark watch` (canaries on a schedule)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flashspark.cli import console
from flashspark.cli.common import (
    finish,
    handle_errors,
    json_option,
    key_from_env,
    out_option,
    parse_number_list,
    recipe_options,
    resolve_run,
    run,
    stop_on_signals,
)
from flashspark.cli.common import resolve_target as resolve_cli_target
from flashspark.cli.console import escape
from flashspark.cli.traffic import parse_listen
from flashspark.errors import InputError

if TYPE_CHECKING:
    from rich.table import Table

    from flashspark.watch.canary import ProbeResult
    from flashspark.watch.keeper import WatchSummary
    from flashspark.watch.view import MonitorSnapshot


LOG_EVERY_S = 10.0  # each node's last log line: one more SSH command per node, so not every refresh


def _fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def _ms(value: float | None) -> str:
    return "–" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s")


def snapshot_line(s: MonitorSnapshot) -> str:
    """One plain line per snapshot, for logs and pipes."""
    v = s.serving
    engines = " ".join(f"{n.node}:{n.engine}" for n in s.nodes) or "-"
    canary = "-" if s.canary is None else ("ok" if s.canary.ok else "FAIL " + ",".join(s.canary.failing))
    positions = "/".join(f"{r:.2f}" for r in v.per_position) or "-"
    return (
        f"{s.deployment} health={v.health} engines={engines} run={_fmt(v.running, '.0f')} "
        f"wait={_fmt(v.waiting, '.0f')} kv={_fmt(None if v.kv_usage is None else 100 * v.kv_usage, '.1f', '%')} "
        f"prompt={_fmt(v.prompt_tps)}tok/s gen={_fmt(v.generation_tps)}tok/s preempt={_fmt(v.preemptions, '.0f')} "
        f"accept={_fmt(None if v.acceptance_rate is None else 100 * v.acceptance_rate, '.1f', '%')} "
        f"len={_fmt(v.mean_acceptance_length, '.2f')} pos={positions} ttft_p50={_ms(v.ttft_p50_s)} "
        f"ttft_p99={_ms(v.ttft_p99_s)} itl_p50={_ms(v.itl_p50_s)} itl_p99={_ms(v.itl_p99_s)} canary={canary}"
        + (f" error={s.error}" if s.error else "")
    )


def snapshot_table(s: MonitorSnapshot) -> Table:
    v = s.serving
    table = console.table(title=f"{escape(s.deployment)} — {escape(s.base_url)}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    health = {"ok": "[green]ok[/]", "failing": "[red]failing[/]", "unreachable": "[red]unreachable[/]"}[v.health]
    rows: list[tuple[str, str]] = [("health", health + (f" {escape(s.error)}" if s.error else ""))]
    for node in s.nodes:
        style = "green" if node.engine == "running" else "red"
        detail = f" {escape(node.detail)}" if node.detail else ""
        rows.append((f"rank {node.rank} {escape(node.node)}", f"[{style}]{node.engine}[/]{detail}"))
        if node.last_log:
            rows.append(("  last log line", f"[dim]{escape(node.last_log)}[/]"))
    kv = None if v.kv_usage is None else 100 * v.kv_usage
    rows += [
        ("running / waiting", f"{_fmt(v.running, '.0f')} / {_fmt(v.waiting, '.0f')}"),
        ("KV-cache usage", _fmt(kv, ".1f", " %")),
        ("prompt / generation tok/s", f"{_fmt(v.prompt_tps)} / {_fmt(v.generation_tps)}"),
        ("preemptions (window)", _fmt(v.preemptions, ".0f")),
        ("acceptance", _fmt(None if v.acceptance_rate is None else 100 * v.acceptance_rate, ".1f", " %")),
        ("mean accepted length", _fmt(v.mean_acceptance_length, ".2f")),
        ("by draft position", "  ".join(f"{i}:{r:.0%}" for i, r in enumerate(v.per_position)) or "–"),
        ("TTFT p50 / p95 / p99", f"{_ms(v.ttft_p50_s)} / {_ms(v.ttft_p95_s)} / {_ms(v.ttft_p99_s)}"),
        ("ITL p50 / p99", f"{_ms(v.itl_p50_s)} / {_ms(v.itl_p99_s)}"),
    ]
    if s.canary is not None:
        state = "[green]passing[/]" if s.canary.ok else "[red]failing: " + escape(", ".join(s.canary.failing)) + "[/]"
        if s.canary.alerts:
            state += " [bold red]ALERT " + escape(", ".join(s.canary.alerts)) + "[/]"
        rows.append(("canary", state))
    for what, value in rows:
        table.add_row(what, value)
    return table


@click.command("monitor")
@recipe_options
@click.option("--base-url", default=None, help="Any vLLM server (default: the deployment, with its nodes).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Seconds per refresh.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N snapshots (default: Ctrl-C).")
@click.option("--web", is_flag=True, help="Also serve a live page on 127.0.0.1 (offline, no CDN).")
@click.option("--web-port", type=click.IntRange(0, 65535), default=8891, show_default=True, help="0: any free port.")
@click.option(
    "--canary-journal",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A watch's canary.jsonl to show (default: the deployment's latest watch).",
)
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one snapshot per line on stdout.")
@handle_errors
def monitor_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    interval: float,
    count: int | None,
    web: bool,
    web_port: int,
    canary_journal: Path | None,
    as_json: bool,
) -> None:
    """Watch a deployment live: every node's engine, requests, KV usage, token rates, preemptions,
    acceptance (overall and by draft position), TTFT and inter-token percentiles, canary status.

    \b
    Rates and percentiles are over the last interval (deltas of vLLM's
    counters and histograms). On a terminal the table refreshes in place;
    piped, one plain line per snapshot; --json, one JSON snapshot per line.
    """
    from flashspark.watch.keeper import latest_journal
    from flashspark.watch.monitor import Feed, Sampler, run_monitor, web_server
    from flashspark.watch.nodes import node_probe

    target, _ = resolve_cli_target(config, profile, sets, base_url, {})
    recipe = target.recipe
    journal = canary_journal or latest_journal(recipe)
    live = not as_json and sys.stdout.isatty()

    async def go() -> None:
        # Ctrl-C and SIGTERM are how a monitor ends: a clean stop, whatever the loop is waiting on.
        stop = stop_on_signals()
        feed = Feed()
        server = web_server(feed, port=web_port) if web else None
        if server is not None:
            url = await server.start()
            console.print_plain(f"monitor page: {url}/", err=True)
        async with target.client() as client:
            sampler = Sampler(
                client,
                deployment=recipe.cluster.name if target.describes_server else target.base_url,
                nodes=node_probe(recipe, log_every_s=LOG_EVERY_S) if base_url is None else None,
                canary_journal=journal,
            )
            task = asyncio.ensure_future(run_monitor(sampler, feed, interval_s=interval, count=count))
            try:
                await _show(feed, task, stop, as_json=as_json, live=live)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if server is not None:
                    await server.close()

    run(go())


async def _show(feed: Any, task: asyncio.Future[None], stop: asyncio.Event, *, as_json: bool, live: bool) -> None:
    """Print each new snapshot until the sampler ends (by --count) or `stop` (Ctrl-C, SIGTERM)."""
    seen = None
    if live:
        from rich.live import Live

        with Live(console=console.out.real, auto_refresh=False, transient=False) as display:
            while not task.done() and not stop.is_set():
                await asyncio.sleep(0.1)
                if feed.latest is not None and feed.latest is not seen:
                    seen = feed.latest
                    display.update(snapshot_table(seen), refresh=True)
    else:
        while not (task.done() and feed.latest is seen) and not stop.is_set():
            await asyncio.sleep(0.05)
            if feed.latest is not None and feed.latest is not seen:
                seen = feed.latest
                if as_json:
                    console.print_ndjson(seen.model_dump(mode="json"))
                else:
                    console.print_plain(snapshot_line(seen))
                sys.stdout.flush()
    if task.done():
        task.result()  # a sampler that failed says why


@click.command("watch")
@recipe_options
@click.option("--base-url", default=None, help="Any vLLM server (default: the deployment).")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=None, help="Seconds between rounds [watch.interval_s]."
)
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Stop after N rounds.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after SECONDS.")
@click.option(
    "--failures-to-alert",
    type=click.IntRange(min=1),
    default=None,
    help="Failed rounds in a row that raise an alert [watch.failures_to_alert].",
)
@click.option(
    "--longdecode-every",
    type=click.IntRange(min=1),
    default=None,
    help="Every N-th round runs the long-decode canary [watch.longdecode_every].",
)
@click.option(
    "--exporter",
    "exporter_listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve canary metrics for Prometheus here [127.0.0.1:watch.exporter_port]; 'off' for none.",
)
@click.option(
    "--key-env",
    default=None,
    metavar="NAME",
    help="Environment variable holding the key Prometheus must send (needed beyond loopback).",
)
@out_option("canary.jsonl and watch.json")
@json_option
@handle_errors
def watch_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    interval: float | None,
    rounds: int | None,
    duration: float | None,
    failures_to_alert: int | None,
    longdecode_every: int | None,
    exporter_listen: str | None,
    key_env: str | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Canaries against a live deployment: the exact smoke, an agent prompt through the garble detectors,
    acceptance (floor and every draft position) from /metrics deltas, and every N-th round a long decode.

    \b
    Every probe is a line in canary.jsonl with its evidence; a probe failing
    --failures-to-alert rounds in a row raises an alert (journaled, exported
    as flashspark_canary_alert). The exporter serves /metrics for Prometheus.
    Exit 4 when any alert was raised or the last round failed; Ctrl-C stops
    and keeps everything.
    """
    from flashspark.watch.canary import CanarySettings
    from flashspark.watch.keeper import CANARY_TIMEOUTS, keep_watch

    target, run_dir = resolve_run(config, profile, sets, base_url, {}, out, "watch")
    recipe = target.recipe
    settings = CanarySettings.of(
        recipe, interval_s=interval, failures_to_alert=failures_to_alert, longdecode_every=longdecode_every
    )
    exporter = _exporter(exporter_listen, recipe.watch.exporter_port)
    key = key_from_env(key_env)

    def started(url: str | None) -> None:
        where = f"; exporter {url}/metrics" if url else ""
        every = f"every {settings.interval_s:g} s (into {run_dir}){where}"
        console.print_plain(f"watching {target.base_url} {every}", err=True)

    def round_done(index: int, results: list[ProbeResult]) -> None:
        if as_json:
            console.print_ndjson({"round": index, "probes": [r.model_dump(mode="json") for r in results]})
            return
        marks = {True: "ok", False: "FAIL", None: "skip"}
        parts = [f"{r.probe}={marks[r.ok]}" + ("" if r.ok is not False else f" ({r.detail})") for r in results]
        console.print_plain(f"round {index}: " + "  ".join(parts))

    async def go() -> WatchSummary:
        stop = stop_on_signals()
        from flashspark.client import OpenAIClient

        async with OpenAIClient(target.base_url, api_key=target.api_key, timeouts=CANARY_TIMEOUTS) as client:
            return await keep_watch(
                client,
                settings,
                run_dir,
                recipe=recipe if base_url is None else None,
                rounds=rounds,
                duration_s=duration,
                exporter=exporter,
                exporter_key=key,
                stop=stop,
                on_start=started,
                on_round=round_done,
            )

    summary = run(go())

    def show() -> None:
        alerts = ", ".join(f"{a['probe']} (round {a['round']})" for a in summary.alerts) or "none"
        console.print_plain(
            f"{summary.rounds} rounds, {summary.requests} requests, {summary.tokens} tokens "
            f"({summary.requests_per_hour:.0f} requests/h, {summary.tokens_per_hour:.0f} tokens/h); alerts: {alerts}\n"
            f"journal: {summary.journal}"
        )

    finish(summary, as_json, show, ok=summary.ok)


def _exporter(listen: str | None, default_port: int) -> tuple[str, int] | None:
    if listen is None:
        return ("127.0.0.1", default_port)
    if listen == "off":
        return None
    return parse_listen(listen)


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str, *, option: str = "--duration") -> float:
    """'45m', '90s', '1.5h' or plain seconds."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:])
    number = raw[:-1] if unit else raw
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise InputError(f"{text!r} is not a duration", key=option, value=text, fix="write e.g. 45m, 90s or 1.5h")
    return seconds


@click.command("soak")
@recipe_options
@click.option("--base-url", default=None, help="Any OpenAI-compatible server (default: the deployment).")
@click.option("--duration", "duration_text", default="45m", show_default=True, help="How long: 45m, 90s, 1.5h.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=4, show_default=True)
@click.option("--max-tokens", "max_tokens_text", default=None, help="Comma list to draw from [watch.soak_max_tokens].")
@click.option("--temperatures", default="0,0.3,0.7", show_default=True, help="Comma list to draw from.")
@click.option("--heartbeat", "heartbeat_text", default="5m", show_default=True, help="Totals line every ...")
@click.option("--canary-every", "canary_text", default="1m", show_default=True, help="Canary rounds; 'off': none.")
@click.option("--seed", type=int, default=None, help="Seed the draws (kinds, lengths, temperatures).")
@out_option("soak.jsonl, soak.json, canary.jsonl, report.md and soak.png")
@json_option
@handle_errors
def soak_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    duration_text: str,
    concurrency: int,
    max_tokens_text: str | None,
    temperatures: str,
    heartbeat_text: str,
    canary_text: str,
    seed: int | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Agent-shaped traffic for a long time, every reply checked (the recipe's soak.py).

    \b
    Six prompt kinds (tool turn, code, JSON, reasoning, long context, chat),
    random lengths and temperatures, the garble detectors and the short-body
    rule on every reply; one line per problem, a heartbeat, canary rounds in
    between, and a report with a timeline plot at the end. Ctrl-C stops early
    and keeps everything. Exit 4 when any reply was bad or a canary alerted.
    """
    from flashspark.report.soak_report import write_soak_report
    from flashspark.watch.canary import CanarySettings
    from flashspark.watch.soak import Soak, SoakOptions

    target, run_dir = resolve_run(config, profile, sets, base_url, {}, out, "soak")
    recipe = target.recipe
    canary_s = None if canary_text == "off" else parse_duration(canary_text, option="--canary-every")
    options = SoakOptions(
        duration_s=parse_duration(duration_text),
        concurrency=concurrency,
        max_tokens=parse_number_list(max_tokens_text, option="--max-tokens", example="300,500,800")
        if max_tokens_text
        else tuple(recipe.watch.soak_max_tokens),
        temperatures=parse_number_list(
            temperatures, option="--temperatures", kind=float, minimum=0, example="0,0.3,0.7"
        ),
        heartbeat_s=parse_duration(heartbeat_text, option="--heartbeat"),
        canary_interval_s=canary_s,
        seed=seed,
    )
    server_recipe = target.server_recipe

    def on_event(kind: str, entry: dict[str, Any]) -> None:
        if as_json:
            if kind not in ("sample", "request"):
                console.print_ndjson(entry)
            return
        if kind == "problem":
            what = entry.get("error") or ", ".join(d["detector"] for d in entry.get("detectors", []))
            console.print_plain(f"PROBLEM request {entry['index']} ({entry['kind']}, t={entry['temperature']}): {what}")
        elif kind == "heartbeat":
            console.print_plain(
                f"heartbeat: {entry['requests']} requests, {entry['completion_tokens']} tokens, "
                f"{entry['aggregate_tokens_per_s']} tok/s, {entry['errors']} errors, {entry['degenerate']} degenerate"
            )
        elif kind == "canary" and (entry["failing"] or entry["alerts"]):
            console.print_plain(f"CANARY round {entry['round']}: failing {entry['failing']}, alerts {entry['alerts']}")

    async def go() -> Any:
        stop = stop_on_signals()
        async with target.client() as client:
            soak = Soak(
                client,
                options,
                run_dir,
                canary=CanarySettings.of(recipe) if canary_s is not None else None,
                pins=target.pins,
                recipe=server_recipe.public_dict() if server_recipe is not None else None,
                on_event=on_event,
            )
            console.print_plain(
                f"soaking {target.base_url} for {options.duration_s / 60:g} min at concurrency {concurrency} "
                f"(into {run_dir})",
                err=True,
            )
            return await soak.run(stop)

    summary = run(go())
    written = write_soak_report(run_dir)

    def show() -> None:
        console.print_plain(
            f"{summary.requests} requests, {summary.completion_tokens} tokens in {summary.wall_s / 60:.1f} min: "
            f"{summary.aggregate_tokens_per_s} tok/s aggregate, {summary.per_stream_tokens_per_s_p50} per stream; "
            f"{summary.errors} errors, {summary.degenerate} degenerate; canary alerts: "
            f"{', '.join(summary.canary_alerts) or 'none'}\nreport: {written[0]}"
        )

    finish(summary, as_json, show, ok=summary.healthy)
