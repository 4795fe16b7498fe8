"""Every node's engine, as the deployment's runtime sees it (process group or container alive), and the
last line of its log (read less often: over SSH it is one more connection per node)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from flashspark.cluster.lifecycle import recorded_state
from flashspark.cluster.observe import read_logs
from flashspark.cluster.runtimes import runtime_for
from flashspark.cluster.transport import transport_for
from flashspark.errors import ClusterError
from flashspark.recipe.model import Recipe
from flashspark.watch.view import NodeView

NodeProbe = Callable[[], Awaitable[list[NodeView]]]
LOG_LINE_CHARS = 240


def node_probe(recipe: Recipe, *, log_every_s: float | None = None) -> NodeProbe:
    """A probe of the deployment FlashSpark recorded for `recipe` (re-read each time: a restart changes it);
    with `log_every_s`, each node's last log line too, read at most that often."""
    runtime = runtime_for(recipe)
    logs: dict[str, str] = {}
    read_at = -float("inf")

    async def last_lines() -> dict[str, str]:
        nonlocal read_at
        if log_every_s is not None and time.monotonic() - read_at >= log_every_s:
            read_at = time.monotonic()
            tails = await read_logs(recipe, lines=1)
            logs.update({node: (text.strip().splitlines() or [""])[-1][:LOG_LINE_CHARS] for node, text in tails})
        return logs

    async def probe() -> list[NodeView]:
        state = recorded_state(recipe)
        if state is None:
            return [
                NodeView(node=n.name, rank=i, engine="unknown", detail="not started")
                for i, n in enumerate(recipe.nodes)
            ]

        async def one(rank: int, node: str) -> NodeView:
            process = next(p for p in state.nodes if p.rank == rank)
            try:
                alive = await runtime.alive(transport_for(recipe.nodes[rank]), process)
            except (ClusterError, OSError) as error:
                return NodeView(node=node, rank=rank, engine="unknown", detail=str(error)[:200])
            return NodeView(node=node, rank=rank, engine="running" if alive else "exited")

        views = list(await asyncio.gather(*(one(p.rank, p.node) for p in state.nodes)))
        lines = await last_lines()
        return [v.model_copy(update={"last_log": lines.get(v.node)}) for v in views]

    return probe


def engine_check(recipe: Recipe) -> Callable[[], Awaitable[dict[tuple[str, int], bool]]]:
    """The canary's view of the nodes, for the exporter's engine gauge: up per (node, rank); an unknown
    state counts as not up."""
    probe = node_probe(recipe)

    async def check() -> dict[tuple[str, int], bool]:
        return {(v.node, v.rank): v.engine == "running" for v in await probe()}

    return check
