"""The lifecycle of a deployment, one node or N: provision, preflight, workers first, rendezvous,
readiness, boot evidence; and a verified down.

`up` provisions what this machine must provide (the embedded engine, a local
model), runs preflight on every node (nothing starts if any check fails) and,
with several nodes, the fabric all-reduce; starts the workers first and the
head last through the node runtime (`process` or `compose`) over each node's
transport (this machine, or ssh), streams every
node's log lines as progress, waits for the rendezvous when there are several
ranks, then walks the head's readiness phases while watching every engine, and
checks the boot log's kernel backends against the profile's `[expect]`. On
any failure it keeps every node's log tail and a failure.json in the run
directory and stops every node. The embedded default is simply a one-node
deployment whose transport is this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flashspark.bootlog import parse_boot_log
from flashspark.cluster.events import Events
from flashspark.cluster.expectations import backend_mismatches
from flashspark.cluster.fabric import FabricReport, fabric_check
from flashspark.cluster.ports import port_held
from flashspark.cluster.preflight import NodeCheck, preflight_with_facts, resolved_gids
from flashspark.cluster.provision import provision
from flashspark.cluster.readiness import ReadinessTarget, wait_until_ready
from flashspark.cluster.reports import BootRecord, DownResult, FailureRecord, ServedModel, UpResult
from flashspark.cluster.runtimes import ComposeRuntime, NodeRuntime, image_labels, read_log, runtime_for
from flashspark.cluster.state import DeploymentState, NodeProcess, read_state, state_path, write_state
from flashspark.cluster.transport import Transport, transport_for
from flashspark.errors import AlreadyRunning, NodeUnreachable, PhaseFailed, PreflightFailed
from flashspark.files import write_atomic, write_json
from flashspark.pins import NodeImage, Pins
from flashspark.provenance.image import MANIFEST_LABEL
from flashspark.recipe.model import Recipe
from flashspark.redact import redact
from flashspark.render import probe_host, render_plan
from flashspark.render.compose import SERVICE
from flashspark.render.launch import LaunchPlan

WATCH_S = 2.0
TAIL_LINES = 60
BOOT_LOG_LINES = 20_000
PORT_RELEASE_S = 10.0
# vLLM's parallel_state logs this on every rank once torch.distributed has formed the
# group, i.e. after all ranks connected (GPU and CPU builds alike).
RENDEZVOUS_DONE = re.compile(r"rank \d+ in world size (\d+) is assigned as")


# On a remote node, relative to the ssh user's home (the login's working directory): a folder of
# that user's own, never a predictable name in a shared /tmp that another user could create first.
REMOTE_NODES_DIR = ".cache/flashspark/nodes"


def node_dir(recipe: Recipe, rank: int) -> str:
    """Where a node keeps its rendered files and engine log: its checkout_dir, else a per-deployment folder
    of the user's own (FLASHSPARK_HOME on this machine, ~/.cache/flashspark on a remote node). The runtime
    checks that it is private (ours, no group or other write) before writing or sourcing anything there."""
    node = recipe.nodes[rank]
    if node.checkout_dir:
        return f"{node.checkout_dir}/{node.name}"
    if node.ssh == "local":
        return f"{recipe.paths.home}/nodes/{recipe.cluster.name}/{node.name}"
    return f"{REMOTE_NODES_DIR}/{recipe.cluster.name}/{node.name}"


def new_run_dir(recipe: Recipe, kind: str) -> Path:
    """A fresh run directory `<runs>/<UTC time>-<deployment>-<kind>[-N]`."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(recipe.paths.runs_dir) / f"{stamp}-{recipe.cluster.name}-{kind}"
    run_dir, suffix = base, 1
    while run_dir.exists():
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    run_dir.mkdir(parents=True)
    return run_dir


def recorded_state(recipe: Recipe) -> DeploymentState | None:
    """The deployment FlashSpark recorded for this recipe (whether it still runs is for the nodes to say)."""
    return read_state(state_path(recipe))


@dataclass
class LogStream:
    """One node's engine log, streamed over its transport line by line."""

    node: str
    argv: list[str]
    on_line: Callable[[str, str], None]
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # stdin stays open: closing it is how the remote follower learns to stop.
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.strip():
                self.on_line(self.node, line)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class Watch:
    """What the background tasks learned while the head boots."""

    dead: str | None = None
    rendezvous: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    streams: list[LogStream] = field(default_factory=list)


async def stop_nodes(
    runtime: NodeRuntime,
    transports: dict[int, Transport],
    processes: Mapping[int, NodeProcess | None],
    *,
    grace_s: float,
) -> dict[int, list[str] | str]:
    """Stop every node in parallel; per rank what is left, or why the node could not be reached."""

    async def one(rank: int) -> list[str] | str:
        try:
            return await runtime.stop(transports[rank], processes[rank], grace_s=grace_s)
        except NodeUnreachable as error:
            return error.message

    ranks = list(processes)
    outcomes = await asyncio.gather(*(one(r) for r in ranks))
    return dict(zip(ranks, outcomes, strict=True))


async def save_tails(
    recipe: Recipe,
    runtime: NodeRuntime,
    transports: dict[int, Transport],
    processes: Mapping[int, NodeProcess],
    run_dir: Path,
) -> dict[str, str]:
    """Every node's log tail, secrets masked, kept in the run directory (why a deployment stopped)."""
    secrets = recipe.secret_values()
    tails: dict[str, str] = {}
    for rank, process in processes.items():
        try:
            text = await read_log(runtime, transports[rank], process, lines=TAIL_LINES)
        except NodeUnreachable as error:
            text = f"(unreachable: {error.message})"
        tails[process.node] = redact(text, secrets)
        write_atomic(run_dir / f"rank{rank}-{process.node}.log.tail", tails[process.node])
    return tails


def resolve_pending(plan: LaunchPlan, checks: list[NodeCheck]) -> LaunchPlan:
    """Fill the values the plan left to the node (NCCL_IB_GID_INDEX=auto) from what preflight resolved."""
    gids = resolved_gids(checks)
    nodes = []
    for launch in plan.nodes:
        if launch.pending.get("NCCL_IB_GID_INDEX") == "auto" and launch.name in gids:
            env = {**launch.env, "NCCL_IB_GID_INDEX": gids[launch.name]}
            pending = {k: v for k, v in launch.pending.items() if k != "NCCL_IB_GID_INDEX"}
            update: dict[str, object] = {"env": env, "pending": pending}
            if launch.compose is not None:
                compose = copy.deepcopy(launch.compose)
                compose["services"][SERVICE]["environment"]["NCCL_IB_GID_INDEX"] = gids[launch.name]
                update["compose"] = compose
            launch = launch.model_copy(update=update)
        nodes.append(launch)
    return plan.model_copy(update={"nodes": nodes})


async def up(recipe: Recipe, *, events: Events, environ: Mapping[str, str] | None = None) -> UpResult:
    """Launch every node (workers first), wait for the rendezvous and the head, or clean up and raise.

    Raises AlreadyRunning, EngineError (provisioning), PreflightFailed, PhaseFailed (with every
    node's log tail).
    """
    running = await deployment_running(recipe)
    if running is not None:
        raise AlreadyRunning(
            f"deployment {recipe.cluster.name!r} is already running ({running})",
            where=recipe.cluster.name,
            fix="use it, or stop it first with `flashspark down`",
        )
    provisioned = provision(recipe, events=events, environ=environ)
    recipe = provisioned.recipe
    events.phase("preflight", "start")
    checked = await preflight_with_facts(recipe)
    checks = checked.checks
    failed = [c for c in checks if not c.ok]
    if failed:
        events.phase("preflight", "fail", f"{len(failed)} check(s)")
        first = failed[0]
        raise PreflightFailed(
            f"preflight failed on {len(failed)} check(s); nothing was started. "
            f"First: {first.node}: {first.check} ({first.detail})",
            failed=failed,
            where=first.node,
            fix=first.fix,
        )
    events.phase("preflight", "ok")
    fabric = await check_fabric(recipe, events, gids=resolved_gids(checks))
    plan = resolve_pending(render_plan(recipe), checks)
    run_dir = new_run_dir(recipe, "up")
    write_json(run_dir / "plan.json", plan.model_dump(mode="json"))
    write_json(run_dir / "recipe.json", recipe.public_dict())
    runtime = runtime_for(recipe)
    transports = {n.rank: transport_for(recipe.nodes[n.rank]) for n in plan.nodes}
    processes: dict[int, NodeProcess] = {}
    watch = Watch()
    world_size = len(plan.nodes)
    secrets = recipe.secret_values()
    started = time.monotonic()

    def on_line(node: str, line: str) -> None:
        events.log_line(node, redact(line, secrets))
        if node == plan.head.name and RENDEZVOUS_DONE.search(line):
            watch.rendezvous.set()

    try:
        for launch in plan.start_order:  # workers first, the head last
            events.phase(f"start {launch.name}", "start", f"rank {launch.rank}, {runtime.kind}")
            process = await runtime.start(transports[launch.rank], node_dir(recipe, launch.rank), launch)
            processes[launch.rank] = process
            stream = LogStream(
                launch.name,
                transports[launch.rank].local_argv(runtime.log_argv(process, lines=None, follow=True, since=None)),
                on_line,
            )
            await stream.start()
            watch.streams.append(stream)
            events.phase(f"start {launch.name}", "ok", process.container or f"pid {process.pid}")
        state = DeploymentState.started(
            recipe, run_dir=str(run_dir), base_url=plan.api_base_url, nodes=[processes[r] for r in sorted(processes)]
        )
        write_state(state_path(recipe), state)

        async def watcher(rank: int) -> None:
            while watch.dead is None:
                if not await runtime.alive(transports[rank], processes[rank]):
                    watch.dead = f"the vLLM engine of {processes[rank].node} (rank {rank}) exited"
                    return
                await asyncio.sleep(WATCH_S)

        watch.tasks = [asyncio.create_task(watcher(r)) for r in processes]
        if world_size > 1:
            await wait_rendezvous(watch, recipe.lifecycle.rendezvous_timeout_s, world_size, events)
        target = ReadinessTarget.for_recipe(recipe, plan.api_base_url)
        served = await wait_until_ready(target, alive=lambda: watch.dead, events=events)
        boot_s = time.monotonic() - started
        head = processes[0]
        head_log = await read_log(runtime, transports[0], head, lines=BOOT_LOG_LINES)
        boot = parse_boot_log(head_log)
        mismatches = backend_mismatches(recipe.expect, boot)
        if mismatches:
            events.phase("boot evidence", "fail", mismatches[0].message)
            raise PhaseFailed(
                "; ".join(m.message for m in mismatches),
                phase="boot evidence",
                fix="check the backend switches of the profile's env groups (VLLM_USE_B12X_MOE=1) and the image; "
                "`--set EXPECT_MOE_BACKEND=none` drops the expectation for a diagnostic boot",
            )
        # What the head logged wins over what provisioning installed (the same, unless the image differs).
        pins = provisioned.pins.merged(
            runtime=recipe.cluster.runtime,
            model=recipe.model.id,
            model_revision=recipe.model.revision,
            vllm_version=boot.vllm_version,
            **(await image_pins(recipe, transports)).model_dump(exclude_defaults=True),
        )
        record = BootRecord(
            deployment=recipe.cluster.name,
            profile=recipe.profile.name,
            runtime=recipe.cluster.runtime,
            nodes=[p.node for p in state.nodes],
            boot_s=round(boot_s, 2),
            evidence=boot,
            served_model=ServedModel.model_validate(served),
            pins=pins,
            base_url=plan.api_base_url,
            log=head.log_path,
            logs={p.node: p.log_path for p in state.nodes},
            host_facts=checked.facts,
            fabric=fabric,
        )
        boot_json = run_dir / "boot.json"
        write_json(boot_json, record.model_dump(mode="json"))
        return UpResult(
            deployment=state.deployment,
            base_url=state.base_url,
            run_dir=state.run_dir,
            boot_json=str(boot_json),
            boot_s=round(boot_s, 1),
            nodes=state.nodes,
            boot=boot,
        )
    except BaseException as error:
        tails = await save_tails(recipe, runtime, transports, processes, run_dir)
        left = await stop_nodes(runtime, transports, processes, grace_s=recipe.lifecycle.stop_timeout_s)
        state_path(recipe).unlink(missing_ok=True)
        failure = FailureRecord(
            message=redact(str(error), secrets),
            phase=error.phase if isinstance(error, PhaseFailed) else None,
            process_groups={p.node: p.pgid for p in processes.values() if p.pgid},
            containers={p.node: p.container for p in processes.values() if p.container},
            left_after_stop={processes[r].node: v for r, v in left.items() if v},
        )
        if isinstance(error, PhaseFailed):
            error.log_tail = "\n".join(f"--- {node}\n{tail}" for node, tail in tails.items())
        write_json(run_dir / "failure.json", failure.model_dump(mode="json"))
        raise
    finally:
        for task in watch.tasks:
            task.cancel()
        await asyncio.gather(*watch.tasks, return_exceptions=True)
        for stream in watch.streams:
            await stream.stop()


async def check_fabric(recipe: Recipe, events: Events, *, gids: dict[str, str]) -> FabricReport | None:
    """Several nodes: the all-reduce across them before any engine starts (`lifecycle.fabric_check`), with
    the GID indexes preflight resolved, as the engines will get them."""
    if len(recipe.nodes) < 2 or not recipe.lifecycle.fabric_check:
        return None
    events.phase("fabric", "start", f"all-reduce across {len(recipe.nodes)} nodes")
    report = await fabric_check(recipe, timeout_s=recipe.lifecycle.fabric_timeout_s, gids=gids)
    if not report.ok:
        first = report.problems[0]
        events.phase("fabric", "fail", first.message)
        raise PreflightFailed(
            f"the fabric check failed; nothing was started. {first.message}",
            failed=[NodeCheck(p.node, "fabric all-reduce", False, p.message, p.fix) for p in report.problems],
            where=first.node,
            fix=first.fix,
        )
    small = report.sizes[0] if report.sizes else None
    events.phase("fabric", "ok", f"{small.bytes} B in {small.p50_us:g} us" if small else "")
    return report


async def image_pins(recipe: Recipe, transports: dict[int, Transport]) -> Pins:
    """compose: the image tag, each node's image ID and the manifest sha256 its label names."""
    if recipe.cluster.runtime != "compose":
        return Pins()
    per_node: dict[str, NodeImage] = {}
    for rank, transport in transports.items():
        found, labels = await image_labels(transport, recipe.cluster.image)
        per_node[recipe.nodes[rank].name] = NodeImage(image_id=found, manifest_sha256=labels.get(MANIFEST_LABEL))
    ids = {v.image_id for v in per_node.values()}
    manifests = {v.manifest_sha256 for v in per_node.values()}
    return Pins(
        image=recipe.cluster.image,
        image_id=ids.pop() if len(ids) == 1 else None,
        image_manifest_sha256=manifests.pop() if len(manifests) == 1 else None,
        image_per_node=per_node,
    )


async def deployment_running(recipe: Recipe) -> str | None:
    """Why the deployment counts as running (an engine alive, a node unreachable, a labelled container),
    or None; a record whose engines are all gone is removed."""
    runtime = runtime_for(recipe)
    state = recorded_state(recipe)
    reasons = []
    for rank, node in enumerate(recipe.nodes):
        transport = transport_for(node)
        process = next((p for p in state.nodes if p.rank == rank), None) if state is not None else None
        try:
            if process is not None and await runtime.alive(transport, process):
                reasons.append(f"engine alive on {node.name}")
            elif isinstance(runtime, ComposeRuntime) and await runtime.leftovers(transport):
                reasons.append(f"labelled containers on {node.name}")
        except NodeUnreachable:
            if process is not None:
                reasons.append(f"{node.name} unreachable, its engine may still run")
    if not reasons:
        state_path(recipe).unlink(missing_ok=True)
        return None
    return "; ".join(reasons)


async def wait_rendezvous(watch: Watch, budget_s: float, world_size: int, events: Events) -> None:
    """Until the head reports the process group formed; fails early when an engine dies."""
    phase = "rendezvous"
    events.phase(phase, "start", f"{world_size} ranks")
    started = time.monotonic()
    while not watch.rendezvous.is_set():
        if watch.dead is not None:
            events.phase(phase, "fail", watch.dead)
            raise PhaseFailed(f"{watch.dead} during phase {phase!r}", phase=phase, fix="read the log lines below")
        if time.monotonic() - started > budget_s:
            events.phase(phase, "fail", f"timed out after {budget_s:g} s")
            raise PhaseFailed(
                f"phase {phase!r} timed out after {budget_s:g} s: not every rank joined the head's process group",
                phase=phase,
                fix="check that every worker reaches MASTER_ADDR:MASTER_PORT over the fabric, that the workers "
                "run the same image and vLLM, and the workers' logs below",
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.rendezvous.wait(), timeout=0.5)
    events.phase(phase, "ok", f"{time.monotonic() - started:.1f} s")


async def down(recipe: Recipe, *, events: Events) -> DownResult:
    """Stop every node and verify: nothing of ours left on any node, the API port free.

    Without a state file (another machine started it, or it was lost) the compose
    runtime still finds its containers by label; the process runtime has nothing to stop.
    """
    path = state_path(recipe)
    state = read_state(path)
    result = DownResult(deployment=recipe.cluster.name)
    runtime = runtime_for(recipe)
    if state is None and recipe.cluster.runtime != "compose":
        result.was_running = False
        return result
    transports = {rank: transport_for(node) for rank, node in enumerate(recipe.nodes)}
    known = {p.rank: p for p in state.nodes} if state is not None else {}
    processes: dict[int, NodeProcess | None] = {rank: known.get(rank) for rank in transports}
    for rank in processes:
        events.phase(f"stop {recipe.nodes[rank].name}", "start")
    outcomes = await stop_nodes(runtime, transports, processes, grace_s=recipe.lifecycle.stop_timeout_s)
    for rank, outcome in outcomes.items():
        name = recipe.nodes[rank].name
        if isinstance(outcome, str):
            result.unreachable[name] = outcome
            events.phase(f"stop {name}", "fail", "unreachable")
        elif outcome:
            result.leftovers[name] = outcome
            events.phase(f"stop {name}", "fail", ", ".join(outcome))
        else:
            result.stopped.append(name)
            events.phase(f"stop {name}", "ok")
    if state is None and not result.leftovers and not result.unreachable:
        result.was_running = False
    api_host = probe_host(state.api_host if state is not None else recipe.api.host)
    api_port = state.api_port if state is not None else recipe.api.port
    # A stopped server's socket can take a moment to close.
    deadline = time.monotonic() + PORT_RELEASE_S
    while port_held(api_host, api_port) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    result.port_free = not port_held(api_host, api_port)
    if result.clean:
        path.unlink(missing_ok=True)
    return result


__all__ = ["deployment_running", "down", "new_run_dir", "node_dir", "recorded_state", "up"]
