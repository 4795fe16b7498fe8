"""Every node's engine, as the deployment's runtime sees it (process group or container alive)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from flashspark.cluster.lifecycle import recorded_state
from flashspark.cluster.runtimes import runtime_for
from flashspark.cluster.transport import transport_for
from flashspark.errors import ClusterError
from flashspark.recipe.model import Recipe
from flashspark.watch.view import NodeView

NodeProbe = Callable[[], Awaitable[list[NodeView]]]


def node_probe(recipe: Recipe) -> NodeProbe:
    """A probe of the deployment FlashSpark recorded for `recipe` (re-read each time: a restart changes it)."""
    runtime = runtime_for(recipe)

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

        return list(await asyncio.gather(*(one(p.rank, p.node) for p in state.nodes)))

    return probe


def engines_of(views: list[NodeView]) -> dict[tuple[str, int], bool]:
    """The exporter's engine gauge: up per (node, rank); an unknown state counts as not up."""
    return {(v.node, v.rank): v.engine == "running" for v in views}
