"""`model verify` on every node: the same stdlib-only probe, sent over ssh to each node's python3."""

from __future__ import annotations

import asyncio

from flashspark.cluster.node_cache import NODE_PYTHON, probe_cache
from flashspark.cluster.reports import ModelVerifyReport, NodeModelCheck
from flashspark.cluster.transport import transport_for
from flashspark.errors import NodeUnreachable, RecipeError
from flashspark.recipe.model import Recipe


async def verify_model_on_nodes(
    recipe: Recipe, *, model: str, revision: str, sha256: bool = False, python: str = NODE_PYTHON
) -> ModelVerifyReport:
    """Per node: its HF cache (HF_CACHE of that node) checked for `model` at `revision`."""
    missing = [n.name for n in recipe.nodes if not n.hf_cache]
    if missing:
        raise RecipeError(
            f"no HF cache path for {', '.join(missing)}",
            key="HF_CACHE",
            fix="set HF_CACHE (or the node's hf_cache) to the host folder that holds the hub cache",
        )

    async def one(rank: int) -> NodeModelCheck:
        node = recipe.nodes[rank]
        try:
            report, why = await probe_cache(
                transport_for(node), node.hf_cache or "", model, revision, sha256=sha256, python=python
            )
        except NodeUnreachable as error:
            return NodeModelCheck(node=node.name, ok=False, problems=[f"unreachable: {error.message}"])
        if report is None:
            return NodeModelCheck(node=node.name, ok=False, problems=[why])
        return NodeModelCheck(node=node.name, ok=report.ok, problems=report.problems, report=report)

    rows = await asyncio.gather(*(one(r) for r in range(len(recipe.nodes))))
    commits = {r.report.commit for r in rows if r.report is not None}
    return ModelVerifyReport(
        model=model,
        revision=revision,
        nodes=list(rows),
        same_commit_everywhere=len(commits) == 1,
        ok=all(r.ok for r in rows) and len(commits) == 1,
    )
