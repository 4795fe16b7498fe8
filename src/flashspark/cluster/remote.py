"""The multi-node lifecycle with the `process` runtime: bare-metal vLLM started over the transports.

`up_cluster` runs preflight on every node (nothing starts if any check
fails), writes each node's env file (owner-only, secrets included) and
starts the workers first, then the head, each detached in its own session so
`down` can signal the whole process group. It then walks the head's readiness
phases while watching every node's process. On any failure it saves every
node's log tail into the run directory and stops every node.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass, field

from flashspark.cluster.events import Events
from flashspark.cluster.local import DownResult, new_run_dir, running_state
from flashspark.cluster.preflight import NodeCheck, preflight, transport_for
from flashspark.cluster.processes import port_open
from flashspark.cluster.readiness import ReadinessTarget, wait_until_ready
from flashspark.cluster.state import DeploymentState, NodeProcess, read_state, state_path, write_state
from flashspark.cluster.transport import Transport
from flashspark.errors import AlreadyRunning, ClusterError, PhaseFailed
from flashspark.recipe.model import Recipe
from flashspark.render import probe_host, render_plan
from flashspark.render.plan import NodeLaunch

WATCH_S = 2.0


class PreflightFailed(ClusterError):
    def __init__(self, failed: list[NodeCheck]) -> None:
        first = failed[0]
        super().__init__(
            f"preflight failed on {len(failed)} check(s); nothing was started. First: {first.node}: {first.check}"
            f" ({first.detail})",
            where=first.node,
            fix=first.fix,
        )
        self.failed = failed


def node_dir(recipe: Recipe, rank: int) -> str:
    node = recipe.nodes[rank]
    base = node.checkout_dir or f"/tmp/flashspark-{recipe.cluster.name}"
    return f"{base}/{node.name}"


def env_file_text(launch: NodeLaunch, secrets: dict[str, str]) -> str:
    values = {**launch.env, **{k: v for k, v in secrets.items() if k in launch.secret_env}}
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(values.items()))


async def start_node(
    transport: Transport, directory: str, launch: NodeLaunch, secrets: dict[str, str], vllm_bin: str
) -> int:
    """Write the env file and start the node's argv detached; return its pid (= its process group)."""
    await transport.write_file(f"{directory}/node.env", env_file_text(launch, secrets))
    argv = [vllm_bin, *launch.argv[1:]]
    script = 'cd "$1" && shift && . ./node.env && setsid nohup "$@" > vllm.log 2>&1 < /dev/null & echo $!'
    result = await transport.run(["sh", "-c", script, "flashspark-start", directory, *argv])
    if not result.ok or not result.stdout.strip().isdigit():
        raise ClusterError(f"could not start {launch.name}: {result.stderr.strip()}", where=launch.name)
    return int(result.stdout.strip())


async def group_alive(transport: Transport, pgid: int) -> bool:
    # dash's kill takes no "--": a negative number names the process group.
    result = await transport.run(["sh", "-c", 'kill -0 "-$1" 2>/dev/null', "flashspark-alive", str(pgid)])
    return result.ok


async def stop_group_remote(transport: Transport, pgid: int, *, grace_s: float) -> bool:
    """TERM the group, then KILL after grace_s (a headless follower ignored TERM here); True when gone."""
    script = (
        'g="-$1"; kill -TERM "$g" 2>/dev/null; i=0; '
        'while kill -0 "$g" 2>/dev/null && [ "$i" -lt "$2" ]; do sleep 0.2; i=$((i+1)); done; '
        'kill -KILL "$g" 2>/dev/null; sleep 0.3; ! kill -0 "$g" 2>/dev/null'
    )
    result = await transport.run(
        ["sh", "-c", script, "flashspark-stop", str(pgid), str(int(grace_s * 5))], timeout_s=grace_s + 30
    )
    return result.ok


async def log_tail(transport: Transport, path: str, lines: int = 60) -> str:
    result = await transport.run(["tail", "-n", str(lines), path])
    return result.stdout if result.ok else result.stderr


@dataclass
class Watch:
    dead: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def up_cluster(recipe: Recipe, *, events: Events) -> DeploymentState:
    """Launch every node (workers first), wait for the head to serve, or clean up and raise.

    Raises AlreadyRunning, PreflightFailed, PhaseFailed (with every node's log tail).
    """
    secrets = recipe.secret_env()
    existing = running_state(recipe)
    if existing is not None:
        raise AlreadyRunning(
            f"deployment {existing.deployment!r} is already running",
            where=existing.run_dir,
            fix="use it, or stop it first with `flashspark down`",
        )
    events.phase("preflight", "start")
    failed = [c for c in await preflight(recipe) if not c.ok]
    if failed:
        events.phase("preflight", "fail", f"{len(failed)} check(s)")
        raise PreflightFailed(failed)
    events.phase("preflight", "ok")
    plan = render_plan(recipe)
    run_dir = new_run_dir(recipe, "up")
    (run_dir / "plan.json").write_text(plan.model_dump_json(indent=2))
    transports = {n.rank: transport_for(recipe.nodes[n.rank]) for n in plan.nodes}
    processes: dict[int, NodeProcess] = {}

    async def stop_all() -> None:
        await asyncio.gather(
            *(
                stop_group_remote(transports[r], p.pgid, grace_s=recipe.lifecycle.stop_timeout_s)
                for r, p in processes.items()
            )
        )

    try:
        for launch in plan.start_order:  # workers first, the head last
            events.phase(f"start {launch.name}", "start", f"rank {launch.rank}")
            directory = node_dir(recipe, launch.rank)
            pid = await start_node(transports[launch.rank], directory, launch, secrets, recipe.cluster.vllm_bin)
            processes[launch.rank] = NodeProcess(
                node=launch.name, rank=launch.rank, pid=pid, pgid=pid, log_path=f"{directory}/vllm.log"
            )
            events.phase(f"start {launch.name}", "ok", f"pid {pid}")
        state = DeploymentState.started(
            recipe, run_dir=str(run_dir), base_url=plan.api_base_url, nodes=[processes[r] for r in sorted(processes)]
        )
        write_state(state_path(recipe), state)
        watch = Watch()

        async def watcher(rank: int) -> None:
            while watch.dead is None:
                if not await group_alive(transports[rank], processes[rank].pgid):
                    watch.dead = f"the vLLM process of {processes[rank].node} (rank {rank}) exited"
                    return
                await asyncio.sleep(WATCH_S)

        watch.tasks = [asyncio.create_task(watcher(r)) for r in processes]
        target = ReadinessTarget.for_recipe(recipe, plan.api_base_url)
        try:
            await wait_until_ready(target, alive=lambda: watch.dead, followers=[], events=events)
        finally:
            for task in watch.tasks:
                task.cancel()
            await asyncio.gather(*watch.tasks, return_exceptions=True)
        return state
    except BaseException as error:
        tails = {}
        for rank, process in processes.items():
            tails[process.node] = await log_tail(transports[rank], process.log_path)
            (run_dir / f"rank{rank}-{process.node}.log.tail").write_text(tails[process.node])
        await stop_all()
        state_path(recipe).unlink(missing_ok=True)
        failure: dict[str, object] = {
            "message": str(error),
            "process_groups": {p.node: p.pgid for p in processes.values()},
        }
        if isinstance(error, PhaseFailed):
            error.log_tail = "\n".join(f"--- {node}\n{tail}" for node, tail in tails.items())
            failure["phase"] = error.phase
        (run_dir / "failure.json").write_text(json.dumps(failure))
        raise


async def down_cluster(recipe: Recipe, *, events: Events) -> DownResult:
    """Stop every node's process group and verify: none left, the API port free."""
    path = state_path(recipe)
    state = read_state(path)
    result = DownResult(deployment=recipe.cluster.name)
    if state is None:
        result.was_running = False
        return result
    for process in state.nodes:
        transport = transport_for(recipe.nodes[process.rank])
        events.phase(f"stop {process.node}", "start", f"process group {process.pgid}")
        gone = await stop_group_remote(transport, process.pgid, grace_s=recipe.lifecycle.stop_timeout_s)
        if gone:
            result.stopped.append(process.node)
            events.phase(f"stop {process.node}", "ok")
        else:
            result.leftover_pids.append(process.pgid)
            events.phase(f"stop {process.node}", "fail", "still alive")
    result.port_free = not port_open(probe_host(state.api_host).strip("[]"), state.api_port)
    if result.clean:
        path.unlink(missing_ok=True)
    return result


__all__ = ["PreflightFailed", "down_cluster", "node_dir", "up_cluster"]
