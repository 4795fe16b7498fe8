"""`model verify` on every node: the same stdlib-only probe, sent over ssh to each node's python3."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from flashspark.cluster.preflight import transport_for
from flashspark.cluster.transport import NodeUnreachable
from flashspark.errors import RecipeError
from flashspark.provenance.model_cache import ModelCacheReport, probe_source
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
    source = probe_source()

    async def one(rank: int) -> dict[str, Any]:
        node = recipe.nodes[rank]
        transport = transport_for(node)
        argv = [python, "-", node.hf_cache or "", model, revision, "1" if sha256 else "0"]
        try:
            result = await transport.run(argv, stdin=source, timeout_s=3600 if sha256 else 300)
        except NodeUnreachable as error:
            return {"node": node.name, "ok": False, "problems": [f"unreachable: {error.message}"], "report": None}
        try:
            report = ModelCacheReport.model_validate(json.loads(result.stdout))
        except ValueError:
            problem = f"the probe did not run with {python}: {result.stderr.strip()[-300:]}"
            return {"node": node.name, "ok": False, "problems": [problem], "report": None}
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
