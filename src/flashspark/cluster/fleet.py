"""Replicas behind vLLM's router: one lifecycle for the fleet, built from the one for a deployment.

`up` starts every replica at once (each its own deployment: preflight, fabric, workers first,
rendezvous, readiness, boot evidence) and, once all serve, the router in front of them; a replica
that fails stops the others. The router is the endpoint: the fleet's state file names it, so gates
and benches that find the deployment by its recipe talk to the router. `down` stops the router
first (no request reaches a replica being stopped), then every replica. `rolling_restart` takes one
replica at a time out of the router, lets it finish its requests, restarts it from the current
recipe, gates it, and puts it back, and stops at the first replica that fails its gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from flashspark.client import OpenAIClient, Timeouts
from flashspark.client.metrics import gauge_sum, per_label
from flashspark.cluster.events import Events
from flashspark.cluster.lifecycle import WATCH_S, down, new_run_dir, node_dir, up
from flashspark.cluster.observe import capture, read_logs, status
from flashspark.cluster.ports import port_held
from flashspark.cluster.preflight import check_port
from flashspark.cluster.readiness import ReadinessTarget, probe_api, wait_until_ready
from flashspark.cluster.reports import CaptureIndex, DownResult, Report, Started, StatusReport, UpResult
from flashspark.cluster.runtimes import ProcessRuntime, read_log
from flashspark.cluster.state import DeploymentState, NodeProcess, read_state, state_path, write_state
from flashspark.cluster.supervisor import supervise
from flashspark.cluster.transport import transport_for
from flashspark.errors import (
    AlreadyRunning,
    ClientError,
    ClusterError,
    FlashsparkError,
    NodeUnreachable,
    PreflightFailed,
)
from flashspark.files import write_atomic, write_json
from flashspark.pins import pins_in_boot_record
from flashspark.recipe.model import Recipe
from flashspark.recipe.replicas import Replica, replicas_of
from flashspark.redact import redact
from flashspark.render import probe_host
from flashspark.render.addresses import router_url, worker_url
from flashspark.render.fleet import WORKER_STARTUP_S, render_router, router_metrics_url

FLEET_SCHEMA_VERSION = 1
# /add_worker answers once the router has seen the replica healthy; it waits up to its startup budget.
ADD_WORKER_S = WORKER_STARTUP_S + 30.0
DRAIN_POLL_S = 0.5


@dataclass
class Prefixed:
    """The fleet's events: each replica's phases under its name, so parallel boots stay readable."""

    events: Events
    prefix: str

    def phase(self, name: str, status: str, detail: str = "") -> None:
        self.events.phase(f"{self.prefix}: {name}", status, detail)

    def log_line(self, node: str, line: str) -> None:
        self.events.log_line(node, line)

    def note(self, text: str) -> None:
        self.events.note(f"{self.prefix}: {text}")


class RouterRecord(Report):
    node: str
    url: str = Field(description="The endpoint clients use (…/v1).")
    metrics_url: str
    policy: str
    argv: list[str]
    process: NodeProcess


class ReplicaRecord(Report):
    name: str
    deployment: str
    worker_url: str
    boot_json: str
    boot_s: float
    nodes: list[str]


class FleetUpResult(Started):
    """What `up` of a fleet hands back, and (as boot.json of the fleet's run) what it keeps."""

    router: RouterRecord
    replicas: list[ReplicaRecord]
    pins: dict[str, object] = Field(default_factory=dict, description="The first replica's pins (all boot alike).")


class FleetDownResult(Report):
    schema_version: int = FLEET_SCHEMA_VERSION
    deployment: str
    router_stopped: bool
    router_port_free: bool
    replicas: dict[str, DownResult]

    @property
    def clean(self) -> bool:
        return self.router_stopped and self.router_port_free and all(r.clean for r in self.replicas.values())


class RouterStatus(Report):
    node: str | None
    alive: bool
    health: int | None
    workers: dict[str, bool] = Field(
        default_factory=dict, description="Each replica URL in the router's rotation -> healthy by its checks."
    )
    requests: dict[str, float] = Field(default_factory=dict, description="replica URL -> requests the router sent.")


class FleetStatus(Report):
    schema_version: int = FLEET_SCHEMA_VERSION
    deployment: str
    base_url: str
    running: bool
    router: RouterStatus
    replicas: dict[str, StatusReport]


def router_directory(recipe: Recipe, rank: int) -> str:
    """The router's folder on its node: the fleet's own, beside the replicas' (`<fleet>-<replica>`)."""
    return f"{node_dir(recipe, rank)}/router"


async def router_alive(recipe: Recipe, state: DeploymentState | None) -> bool:
    if state is None or not state.nodes:
        return False
    process = state.nodes[0]
    return await ProcessRuntime(recipe).alive(transport_for(recipe.nodes[process.rank]), process)


async def fleet_up(recipe: Recipe, *, events: Events) -> FleetUpResult:
    """Every replica in parallel, then the router; on any failure everything started is stopped."""
    fleet_state = read_state(state_path(recipe))
    if await router_alive(recipe, fleet_state):
        raise AlreadyRunning(
            f"fleet {recipe.cluster.name!r} is already running (its router is alive)",
            where=recipe.cluster.name,
            fix="use it, or stop it first with `flashspark down`",
        )
    replicas = replicas_of(recipe)
    run_dir = new_run_dir(recipe, "up")
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(up(r.recipe, events=Prefixed(events, f"replica {r.name}")) for r in replicas), return_exceptions=True
    )
    failed = [(r, o) for r, o in zip(replicas, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        for replica, outcome in zip(replicas, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                await down(replica.recipe, events=Prefixed(events, f"replica {replica.name}"))
        replica, error = failed[0]
        events.note(f"replica {replica.name} failed; the others were stopped")
        raise error
    booted = [o for o in outcomes if isinstance(o, UpResult)]
    try:
        router = await start_router(recipe, events=events)
    except BaseException:
        await stop_router(recipe)
        await asyncio.gather(*(down(r.recipe, events=Prefixed(events, f"replica {r.name}")) for r in replicas))
        raise
    records = [
        ReplicaRecord(
            name=replica.name,
            deployment=result.deployment,
            worker_url=worker_url(replica.recipe),
            boot_json=result.boot_json,
            boot_s=result.boot_s,
            nodes=[n.node for n in result.nodes],
        )
        for replica, result in zip(replicas, booted, strict=True)
    ]
    boot_json = Path(run_dir) / "boot.json"
    first_boot = Path(booted[0].boot_json)
    pins = pins_in_boot_record(first_boot)
    result = FleetUpResult(
        deployment=recipe.cluster.name,
        base_url=router.url,
        run_dir=str(run_dir),
        boot_json=str(boot_json),
        boot_s=round(time.monotonic() - started, 1),
        router=router,
        replicas=records,
        pins=pins,
    )
    write_json(boot_json, result.model_dump(mode="json"))
    state = DeploymentState.started(recipe, run_dir=str(run_dir), base_url=router.url, nodes=[router.process])
    write_state(
        state_path(recipe), state.model_copy(update={"api_host": recipe.router.host, "api_port": recipe.router.port})
    )
    return result


async def start_router(recipe: Recipe, *, events: Events) -> RouterRecord:
    """The router on its node, as a process; ready once it serves the model through a replica."""
    launch = render_router(recipe)
    node = recipe.nodes[launch.rank]
    transport = transport_for(node)
    phase = "router"
    events.phase(phase, "start", f"{node.name}, {recipe.router.policy}")
    found = await transport.run(["sh", "-c", 'command -v "$1"', "flashspark-check", recipe.router.router_bin])
    if not found.ok:
        events.phase(phase, "fail", f"{recipe.router.router_bin} not found")
        raise PreflightFailed(
            f"the router's executable {recipe.router.router_bin!r} is not on {node.name}",
            failed=[],
            where=node.name,
            fix="pip install vllm-router on that node, or set router.router_bin to its path",
        )
    port = await check_port(transport, node.name, "router.port", recipe.router.port)
    if not port.ok:
        events.phase(phase, "fail", port.detail)
        raise PreflightFailed(f"{node.name}: {port.detail}", failed=[port], where=node.name, fix=port.fix)
    runtime = ProcessRuntime(recipe)
    process = await runtime.start(transport, router_directory(recipe, launch.rank), launch)
    # Recorded at once: a router that fails to become ready is still found and stopped.
    write_state(
        state_path(recipe),
        DeploymentState.started(recipe, run_dir="", base_url=router_url(recipe), nodes=[process]).model_copy(
            update={"api_host": recipe.router.host, "api_port": recipe.router.port}
        ),
    )
    events.phase(phase, "ok", f"pid {process.pid}")
    dead: list[str] = []

    async def watch() -> None:
        while await runtime.alive(transport, process):
            await asyncio.sleep(WATCH_S)
        dead.append(f"the router on {node.name} exited (its log: {process.log_path})")

    watcher = asyncio.create_task(watch())
    try:
        target = ReadinessTarget(
            base_url=router_url(recipe),
            served_model_name=recipe.model.served_name,
            max_model_len=recipe.engine.max_model_len,
            api_key=recipe.api_key,
            port_timeout_s=WORKER_STARTUP_S + 30.0,
            health_timeout_s=recipe.lifecycle.health_timeout_s,
            models_timeout_s=recipe.lifecycle.models_timeout_s,
        )
        await wait_until_ready(target, alive=lambda: dead[0] if dead else None, events=Prefixed(events, phase))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return RouterRecord(
        node=node.name,
        url=router_url(recipe),
        metrics_url=router_metrics_url(recipe),
        policy=recipe.router.policy,
        argv=launch.argv,
        process=process,
    )


async def stop_router(recipe: Recipe) -> tuple[bool, bool]:
    """(stopped, port free): the router recorded in the fleet's state, verified gone."""
    state = read_state(state_path(recipe))
    stopped = True
    if state is not None and state.nodes:
        process = state.nodes[0]
        left = await ProcessRuntime(recipe).stop(
            transport_for(recipe.nodes[process.rank]), process, grace_s=recipe.lifecycle.stop_timeout_s
        )
        stopped = not left
    host, port = probe_host(recipe.router.host), recipe.router.port
    deadline = time.monotonic() + 10
    while port_held(host, port) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    free = not port_held(host, port)
    if stopped and free:
        state_path(recipe).unlink(missing_ok=True)
    return stopped, free


async def fleet_down(recipe: Recipe, *, events: Events) -> FleetDownResult:
    """The router first (no request reaches a replica being stopped), then every replica at once."""
    events.phase("stop router", "start")
    stopped, free = await stop_router(recipe)
    events.phase("stop router", "ok" if stopped and free else "fail")
    replicas = replicas_of(recipe)
    results = await asyncio.gather(*(down(r.recipe, events=Prefixed(events, f"replica {r.name}")) for r in replicas))
    return FleetDownResult(
        deployment=recipe.cluster.name,
        router_stopped=stopped,
        router_port_free=free,
        replicas={r.name: result for r, result in zip(replicas, results, strict=True)},
    )


async def router_counts(recipe: Recipe, timeouts: Timeouts | None = None) -> tuple[dict[str, bool], dict[str, float]]:
    """(replica URL -> healthy, for each replica in the rotation; replica URL -> requests placed there).

    Membership is the router's own list (/list_workers): its health gauge keeps a removed worker's last
    value. Health and counts come from its Prometheus endpoint."""
    budgets = timeouts or Timeouts(connect_s=3, stall_s=5)
    async with OpenAIClient(router_metrics_url(recipe).removesuffix("/metrics"), timeouts=budgets) as client:
        text = await client.metrics_text()
    async with OpenAIClient(router_url(recipe).removesuffix("/v1"), timeouts=budgets) as client:
        answered, body = await client.request("GET", "/list_workers")
    members = json.loads(body).get("urls", []) if answered == 200 else []
    health = per_label(text, "vllm_router_worker_health", "worker")
    requests = per_label(text, "vllm_router_policy_decisions_total", "worker")
    return {url: health.get(url, 0) >= 1 for url in sorted(members)}, requests


async def fleet_status(recipe: Recipe, *, timeouts: Timeouts) -> FleetStatus:
    state = read_state(state_path(recipe))
    alive = await router_alive(recipe, state)
    api = await probe_api(router_url(recipe), recipe.api_key, timeouts=timeouts)
    workers: dict[str, bool] = {}
    requests: dict[str, float] = {}
    if alive:
        with contextlib.suppress(ClientError, ValueError):
            workers, requests = await router_counts(recipe)
    replicas = replicas_of(recipe)
    reports = await asyncio.gather(*(status(r.recipe, timeouts=timeouts) for r in replicas))
    serving = alive and api.health == 200 and any(m.id == recipe.model.served_name for m in api.models)
    return FleetStatus(
        deployment=recipe.cluster.name,
        base_url=router_url(recipe),
        running=serving,
        router=RouterStatus(
            node=state.nodes[0].node if state is not None and state.nodes else None,
            alive=alive,
            health=api.health,
            workers=workers,
            requests=requests,
        ),
        replicas={r.name: report for r, report in zip(replicas, reports, strict=True)},
    )


# --- rolling restart ---------------------------------------------------------------------------


class ReplicaRestart(Report):
    name: str
    drained_s: float = Field(description="Out of the router until its last request finished.")
    restart_s: float = Field(description="down + up of the replica.")
    gate: str = Field(description="'passed', or why the gate failed.")
    back_s: float = Field(description="From removal until the router had it back.")


class RollingRestartReport(Report):
    schema_version: int = FLEET_SCHEMA_VERSION
    deployment: str
    ok: bool
    replicas: list[ReplicaRestart]
    stopped_at: str | None = Field(default=None, description="The replica where the restart stopped.")
    reason: str | None = Field(default=None, description="Why it stopped there (its gate, or a refusal).")


#: Runs a gate against one replica (its recipe): None when it passes, else why not.
Gate = Callable[[Recipe], Awaitable[str | None]]


async def _router_admin(recipe: Recipe, method: str, route: str, url: str, budget_s: float) -> None:
    path = f"/{route}?url={urllib.parse.quote(url, safe='')}"
    async with OpenAIClient(router_url(recipe).removesuffix("/v1")) as client:
        answered, body = await client.request(method, path, budget_s=budget_s)
    if answered >= 400:
        raise ClusterError(
            f"the router refused {route} for {url}: {answered} {body[:200].decode(errors='replace')}",
            where=router_url(recipe),
            fix="check the router's log (`flashspark logs`)",
        )


async def drain(replica: Replica, budget_s: float) -> float:
    """Until the replica runs and queues nothing (its own /metrics); seconds it took.

    A replica that does not answer has nothing to finish: its engine is dead or hung, and out of the
    router no request can reach it any more."""
    started = time.monotonic()
    async with OpenAIClient(worker_url(replica.recipe), api_key=replica.recipe.api_key) as client:
        while True:
            try:
                text = await client.metrics_text()
            except ClientError:
                return time.monotonic() - started
            busy = (gauge_sum(text, "vllm:num_requests_running") or 0) + (
                gauge_sum(text, "vllm:num_requests_waiting") or 0
            )
            if busy == 0:
                return time.monotonic() - started
            if time.monotonic() - started > budget_s:
                raise ClusterError(
                    f"replica {replica.name} still had {busy:g} requests after {budget_s:g} s out of the router",
                    where=replica.name,
                    fix="raise router.drain_timeout_s, or restart when the long requests have finished",
                )
            await asyncio.sleep(DRAIN_POLL_S)


async def restart_order(recipe: Recipe) -> list[Replica]:
    """Replicas out of the rotation first (dead or failing: they carry no traffic, and once back they
    carry the load while the serving ones restart), then the serving ones, each group in recipe order."""
    rotation, _ = await router_counts(recipe)
    replicas = replicas_of(recipe)
    return sorted(replicas, key=lambda r: bool(rotation.get(worker_url(r.recipe))))


async def rolling_restart(recipe: Recipe, *, events: Events, gate: Gate) -> RollingRestartReport:
    """One replica at a time: out of the router, drained, restarted from `recipe`, gated, back in.

    A replica that fails its gate stays out of the router (the others keep serving) and the restart
    stops there: the report says which, and why. It never takes out the last replica serving.
    """
    if not await router_alive(recipe, read_state(state_path(recipe))):
        raise ClusterError(
            f"fleet {recipe.cluster.name!r} has no running router: nothing to restart in turn",
            fix="start it with `flashspark up`",
        )
    done: list[ReplicaRestart] = []
    for replica in await restart_order(recipe):
        out = Prefixed(events, f"replica {replica.name}")
        rotation, _ = await router_counts(recipe)
        others = [url for url, healthy in rotation.items() if healthy and url != worker_url(replica.recipe)]
        if rotation.get(worker_url(replica.recipe)) and not others:
            reason = (
                f"replica {replica.name} is the only one serving: taking it out of the router would fail every "
                "request until it is back"
            )
            out.phase("leave the router", "fail", reason)
            return RollingRestartReport(
                deployment=recipe.cluster.name, ok=False, replicas=done, stopped_at=replica.name, reason=reason
            )
        began = time.monotonic()
        out.phase("leave the router", "start")
        await _router_admin(recipe, "POST", "remove_worker", worker_url(replica.recipe), 30.0)
        out.phase("leave the router", "ok")
        out.phase("drain", "start")
        drained = await drain(replica, recipe.router.drain_timeout_s)
        out.phase("drain", "ok", f"{drained:.1f} s")
        restarted = time.monotonic()
        stopped = await down(replica.recipe, events=out)
        if not stopped.clean:
            raise ClusterError(
                f"replica {replica.name} did not stop cleanly; it is out of the router and was not restarted",
                where=replica.name,
                fix="run `flashspark down` for the fleet and fix what it names",
            )
        try:
            await up(replica.recipe, events=out)
        except FlashsparkError as error:
            done.append(ReplicaRestart(name=replica.name, drained_s=drained, restart_s=0, gate=error.message, back_s=0))
            return RollingRestartReport(
                deployment=recipe.cluster.name, ok=False, replicas=done, stopped_at=replica.name, reason=error.message
            )
        restart_s = time.monotonic() - restarted
        out.phase("gate", "start")
        verdict = await gate(replica.recipe)
        if verdict is not None:
            out.phase("gate", "fail", verdict)
            done.append(
                ReplicaRestart(name=replica.name, drained_s=drained, restart_s=restart_s, gate=verdict, back_s=0)
            )
            return RollingRestartReport(
                deployment=recipe.cluster.name, ok=False, replicas=done, stopped_at=replica.name, reason=verdict
            )
        out.phase("gate", "ok")
        await _router_admin(recipe, "POST", "add_worker", worker_url(replica.recipe), ADD_WORKER_S)
        out.phase("back in the router", "ok")
        done.append(
            ReplicaRestart(
                name=replica.name,
                drained_s=round(drained, 2),
                restart_s=round(restart_s, 1),
                gate="passed",
                back_s=round(time.monotonic() - began, 1),
            )
        )
    return RollingRestartReport(deployment=recipe.cluster.name, ok=True, replicas=done)


# --- watching, logs, evidence --------------------------------------------------------------------


async def supervise_fleet(recipe: Recipe, *, events: Events, max_restarts: int) -> None:
    """Each replica supervised on its own: a dead replica restarts alone while the router serves from
    the others (its health checks take the dead one out and bring it back)."""
    await asyncio.gather(
        *(
            supervise(r.recipe, events=Prefixed(events, f"replica {r.name}"), max_restarts=max_restarts)
            for r in replicas_of(recipe)
        )
    )


async def fleet_logs(recipe: Recipe, *, lines: int, since: str | None = None) -> list[tuple[str, str]]:
    """(name, redacted tail) for the router and every node of every replica."""
    out: list[tuple[str, str]] = []
    state = read_state(state_path(recipe))
    if state is not None and state.nodes:
        process = state.nodes[0]
        runtime = ProcessRuntime(recipe)
        try:
            text = await read_log(runtime, transport_for(recipe.nodes[process.rank]), process, lines=lines)
        except NodeUnreachable as error:
            text = f"(unreachable: {error.message})"
        out.append((f"router@{process.node}", redact(text, recipe.secret_values())))
    for replica in replicas_of(recipe):
        tails = await read_logs(replica.recipe, lines=lines, since=since)
        out += [(f"{replica.name}/{node}", text) for node, text in tails]
    return out


async def fleet_capture(recipe: Recipe, out_dir: Path, *, timeouts: Timeouts) -> dict[str, CaptureIndex]:
    """Each replica's evidence bundle under replica-<name>/, and the router's log and metrics under router/."""
    indexes = {
        replica.name: await capture(replica.recipe, out_dir / f"replica-{replica.name}", timeouts=timeouts)
        for replica in replicas_of(recipe)
    }
    router_dir = out_dir / "router"
    router_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (await fleet_logs(recipe, lines=500))[:1]:
        write_atomic(router_dir / "log.tail", text if name.startswith("router@") else "(no router recorded)\n")
    with contextlib.suppress(ClientError):
        async with OpenAIClient(router_metrics_url(recipe).removesuffix("/metrics"), timeouts=timeouts) as client:
            write_atomic(router_dir / "metrics.txt", await client.metrics_text())
    return indexes
