"""`model verify` on every node: the same stdlib-only probe, sent over ssh to each node's python3."""

from __future__ import annotations

import asyncio
from typing import Any

from flashspark.cluster.node_cache import probe_cache
from flashspark.cluster.preflight import transport_for
from flashspark.cluster.transport import NodeUnreachable
from flashspark.errors import RecipeError
from flashspark.recipe.model import Recipe


async def verify_model_on_nodes(
    recipe: Recipe, *, model: str, revision: str, sha256: bool = False, python: str = "python3"
) -> dict[str, Any]:
    """Per node: its HF cache (HF_CACHE of that node) checked for `model` at `revision`."""
    missing = [n.name for n in recipe.nodes if not n.hf_cache]
    if missing:
        raise RecipeError(
            f"no HF cache path for {', '.join(missing)}",
            key="HF_CACHE",
            fix="set HF_CACHE (or the node's hf_cache) to the host folder that holds the hub cache",
        )

    async def one(rank: int) -> dict[str, Any]:
        node = recipe.nodes[rank]
        try:
            report, why = await probe_cache(
                transport_for(node), node.hf_cache or "", model, revision, sha256=sha256, python=python
            )
        except NodeUnreachable as error:
            return {"node": node.name, "ok": False, "problems": [f"unreachable: {error.message}"], "report": None}
        if report is None:
            return {"node": node.name, "ok": False, "problems": [why], "report": None}
        return {"node": node.name, "ok": report.ok, "problems": report.problems, "report": report.model_dump()}

    rows = await asyncio.gather(*(one(r) for r in range(len(recipe.nodes))))
    commits = {r["report"]["commit"] for r in rows if r["report"] is not None}
    return {
        "model": model,
        "revision": revision,
        "nodes": list(rows),
        "same_commit_everywhere": len(commits) == 1,
        "ok": all(r["ok"] for r in rows) and len(commits) == 1,
    }
