"""Keep a deployment serving: restart the whole deployment when an engine dies.

The recipe's engine exits 0 when it dies, so Docker's restart policies never
fire, and a lone node that restarts cannot rejoin the tensor-parallel group
anyway. The supervisor watches every node's engine and the head's /health;
when an engine is gone (or /health fails several checks in a row) it records
why, keeps every node's log tail, stops every node (verified) and runs `up`
again, up to a restart budget. A `Watcher` (the canaries of `flashspark watch`) adds deaths the
engine itself does not show: a server that answers but garbles, or whose acceptance collapsed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flashspark.cluster.events import Events
from flashspark.cluster.lifecycle import down, recorded_state, save_tails, up
from flashspark.cluster.readiness import probe_client
from flashspark.cluster.runtimes import runtime_for
from flashspark.cluster.state import DeploymentState
from flashspark.cluster.transport import transport_for
from flashspark.errors import ClientError, ClusterError, NotRunning
from flashspark.files import append_event
from flashspark.recipe.model import Recipe


@dataclass
class SupervisorLog:
    """supervisor.jsonl in the first run directory: one line per event, flushed at once (and told to the
    watcher, whose journal then shows the whole story)."""

    path: Path
    watcher: Watcher | None = None

    def write(self, kind: str, **details: object) -> None:
        append_event(self.path, kind, **details)
        if self.watcher is not None:
            self.watcher.note(kind, **details)


class Watcher(Protocol):
    """Something that watches a serving deployment and says when it is sick (the canaries)."""

    async def first_failure(self, state: DeploymentState) -> str:
        """Block until the deployment should be restarted; return why."""
        ...

    def note(self, event: str, **details: object) -> None:
        """Record a supervisor event (died, stopped, restarted) beside the watcher's own."""
        ...


async def first_death(recipe: Recipe, state: DeploymentState, *, check_s: float, health_failures: int) -> str:
    """Block until the deployment stops serving; return why."""
    runtime = runtime_for(recipe)
    transports = {p.rank: transport_for(recipe.nodes[p.rank]) for p in state.nodes}
    failures = 0
    async with probe_client(state.base_url, recipe.api_key) as client:
        while True:
            for process in state.nodes:
                if not await runtime.alive(transports[process.rank], process):
                    return f"the engine of {process.node} (rank {process.rank}) exited"
            try:
                healthy = await client.health() == 200
            except ClientError:
                healthy = False
            failures = 0 if healthy else failures + 1
            if failures >= health_failures:
                return f"/health failed {failures} checks in a row"
            await asyncio.sleep(check_s)


async def first_of(
    recipe: Recipe, state: DeploymentState, watcher: Watcher | None, *, check_s: float, health_failures: int
) -> str:
    """Whichever comes first: an engine's death, or the watcher's verdict; the other is cancelled."""
    death = asyncio.ensure_future(first_death(recipe, state, check_s=check_s, health_failures=health_failures))
    waits = {death}
    if watcher is not None:
        waits.add(asyncio.ensure_future(watcher.first_failure(state)))
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return next(iter(done)).result()


async def supervise(recipe: Recipe, *, events: Events, max_restarts: int, watcher: Watcher | None = None) -> None:
    """Watch the deployment (already up) and restart it on death, forever or until the budget is spent
    (raises ClusterError). Cancel it (Ctrl-C) to stop supervising; the deployment stays up. How often it
    checks, how many /health failures count as a death and the pause before a restart are the recipe's
    (`lifecycle.supervise_*`)."""
    settings = recipe.lifecycle
    check_s, health_failures, backoff_s = (
        settings.supervise_check_s,
        settings.supervise_health_failures,
        settings.supervise_backoff_s,
    )
    state = _recorded(recipe)
    log = SupervisorLog(Path(state.run_dir) / "supervisor.jsonl", watcher)
    log.write("watching", nodes=[p.node for p in state.nodes], run_dir=state.run_dir)
    restarts = 0
    while True:
        reason = await first_of(recipe, state, watcher, check_s=check_s, health_failures=health_failures)
        events.phase("supervisor", "fail", reason)
        runtime = runtime_for(recipe)
        transports = {p.rank: transport_for(recipe.nodes[p.rank]) for p in state.nodes}
        tails_dir = Path(state.run_dir) / f"death-{restarts + 1}"
        tails_dir.mkdir(exist_ok=True)
        await save_tails(recipe, runtime, transports, {p.rank: p for p in state.nodes}, tails_dir)
        log.write("died", reason=reason, tails=str(tails_dir))
        stopped = await down(recipe, events=events)
        log.write("stopped", clean=stopped.clean, stopped=stopped.stopped, unreachable=stopped.unreachable)
        if restarts >= max_restarts:
            log.write("gave up", restarts=restarts)
            raise ClusterError(
                f"the deployment died ({reason}) and the restart budget ({max_restarts}) is spent",
                where=str(log.path),
                fix="read the log tails in the run directory; raise --max-restarts only once the cause is known",
            )
        if not stopped.clean:
            log.write("gave up", reason="down was not clean")
            raise ClusterError(
                f"the deployment died ({reason}) and could not be stopped cleanly, so it was not restarted",
                where=str(log.path),
                fix="run `flashspark down` and fix what it names, then `flashspark up` again",
            )
        restarts += 1
        events.note(f"supervisor: restart {restarts}/{max_restarts} in {backoff_s:g} s ({reason})")
        await asyncio.sleep(backoff_s)
        started = time.monotonic()
        restarted = await up(recipe, events=events)
        state = _recorded(recipe)
        log.write("restarted", restart=restarts, boot_s=round(time.monotonic() - started, 1), run_dir=restarted.run_dir)
        events.phase("supervisor", "ok", f"restart {restarts} serving again")


def _recorded(recipe: Recipe) -> DeploymentState:
    state = recorded_state(recipe)
    if state is None:
        raise NotRunning(
            f"deployment {recipe.cluster.name!r} is not running: nothing to supervise",
            fix="start it with `flashspark up --supervise`",
        )
    return state
