"""`model prepare`: the pinned snapshot in every node's HF cache, downloaded once and copied.

The head's cache is checked first with the same probe `model verify` uses;
only when it is incomplete does the head download (huggingface_hub, at the
pinned revision, after a disk-space check). Workers whose cache is already
complete at that commit are left alone; the others get the model's cache
folder streamed from the head (`tar` over the two ssh connections, so blobs
and the snapshot's symlinks arrive as they are) after a disk-space check.
Every node is verified at the end. Serving then runs with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import asyncio
import json
import posixpath

from flashspark.cluster.node_cache import NODE_PYTHON, probe_cache
from flashspark.cluster.reports import ModelPrepareReport, NodeModelPrepared
from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.cluster.transport import Transport, pipe_between, transport_for
from flashspark.errors import ProvenanceError, RecipeError
from flashspark.provenance.model_cache import ModelCacheReport, download_program
from flashspark.recipe.model import Recipe


def repo_folder(cache: str, model: str) -> str:
    return posixpath.join(cache, "hub", f"models--{model.replace('/', '--')}")


async def probe(transport: Transport, cache: str, model: str, revision: str) -> ModelCacheReport | None:
    return (await probe_cache(transport, cache, model, revision))[0]


async def free_bytes(transport: Transport, folder: str) -> int | None:
    """Free space where `folder` will live (its nearest existing parent)."""
    script = 'd="$1"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d" | awk "NR==2 {print \\$4}"'
    result = await transport.run(["sh", "-c", script, "flashspark-df", folder])
    text = result.stdout.strip()
    return int(text) * 1024 if result.ok and text.isdigit() else None


async def used_bytes(transport: Transport, folder: str) -> int | None:
    result = await transport.run(["du", "-sk", "-L", folder])
    first = result.stdout.split()
    return int(first[0]) * 1024 if result.ok and first and first[0].isdigit() else None


async def stream_folder(source: Transport, target: Transport, folder: str, parent_dir: str) -> None:
    """tar on the source node piped into tar on the target: blobs and snapshot symlinks as they are."""
    parent, name = posixpath.split(folder.rstrip("/"))
    unpack = ["sh", "-c", 'mkdir -p "$1" && tar -C "$1" -xf -', "flashspark-unpack", parent_dir]
    failed = await pipe_between(source, ["tar", "-C", parent, "-cf", "-", name], target, unpack)
    if failed is not None:
        raise ProvenanceError(
            f"copying {folder} from {source.name} to {target.name} failed: {failed}",
            where=target.name,
            fix="check free space and permissions of that node's HF cache",
        )


async def prepare_model(
    recipe: Recipe,
    *,
    revision: str | None = None,
    python: str | None = None,
    workers: int,
) -> ModelPrepareReport:
    """Head: verify, else download; workers: verify, else copy from the head; then verify everywhere."""
    model = recipe.model.id
    pinned = revision or recipe.model.revision or "main"
    caches = [n.hf_cache for n in recipe.nodes]
    if not all(caches):
        raise RecipeError("every node needs HF_CACHE for model prepare", key="HF_CACHE", fix="set HF_CACHE per node")
    transports = [transport_for(n) for n in recipe.nodes]
    head, head_cache = transports[0], caches[0] or ""
    actions: dict[str, str] = {}
    head_report = await probe(head, head_cache, model, pinned)
    if head_report is not None and head_report.ok:
        actions[recipe.nodes[0].name] = "complete, not downloaded"
    else:
        script = download_program(recipe.secret_env(recipe.nodes[0]).get("HF_TOKEN"))
        result = await head.run(
            [python or NODE_PYTHON, "-", model, pinned, head_cache, str(workers)],
            stdin=script,
            timeout_s=TIMEOUTS.download_s,
        )
        try:
            outcome = json.loads(result.stdout)
        except ValueError:
            outcome = {"ok": False, "error": result.stderr.strip()[-400:]}
        if not outcome.get("ok"):
            raise ProvenanceError(
                f"download on {recipe.nodes[0].name} failed: {outcome.get('error')}",
                where=recipe.nodes[0].name,
                fix="check HF_TOKEN, the revision and free space; or copy a verified cache there first",
            )
        actions[recipe.nodes[0].name] = f"downloaded {outcome.get('bytes', 0):,} bytes"
        head_report = await probe(head, head_cache, model, pinned)
        if head_report is None or not head_report.ok:
            raise ProvenanceError(f"the head's cache is still incomplete after the download: {head_report}")
    folder = repo_folder(head_cache, model)
    size = await used_bytes(head, folder)
    for rank in range(1, len(recipe.nodes)):
        node, transport, cache = recipe.nodes[rank], transports[rank], caches[rank] or ""
        report = await probe(transport, cache, model, pinned)
        if report is not None and report.ok and report.commit == head_report.commit:
            actions[node.name] = "complete, not copied"
            continue
        free = await free_bytes(transport, posixpath.join(cache, "hub"))
        if size is not None and free is not None and free < size:
            raise ProvenanceError(
                f"{node.name} has {free:,} bytes free in {cache}, the model needs {size:,}",
                where=node.name,
                fix="free space in that node's HF cache (or point HF_CACHE at a larger disk); nothing was copied",
            )
        await stream_folder(head, transport, folder, posixpath.join(cache, "hub"))
        actions[node.name] = f"copied {size or 0:,} bytes from {recipe.nodes[0].name}"
    reports = await asyncio.gather(*(probe(t, c or "", model, pinned) for t, c in zip(transports, caches, strict=True)))
    nodes = [
        NodeModelPrepared(
            node=n.name,
            action=actions.get(n.name, ""),
            ok=bool(r and r.ok),
            commit=r.commit if r else None,
            problems=r.problems if r else ["the probe did not run (python3 missing?)"],
        )
        for n, r in zip(recipe.nodes, reports, strict=True)
    ]
    commits = {row.commit for row in nodes}
    return ModelPrepareReport(
        model=model, revision=pinned, nodes=nodes, ok=all(row.ok for row in nodes) and len(commits) == 1
    )
