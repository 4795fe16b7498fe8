"""Looking at a deployment, one node or N: status, logs and the evidence bundle (capture), per node.

Everything that leaves a node passes `redact` first: a capture is meant to be
attached to an issue, so a container's environment or a log line must never
carry the API key or the Hub token.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from flashspark.client.metrics import parse_metrics
from flashspark.client.schema import PROBE_TIMEOUTS, Timeouts
from flashspark.cluster.lifecycle import image_pins
from flashspark.cluster.preflight import node_ports
from flashspark.cluster.readiness import probe_api
from flashspark.cluster.reports import CaptureDiff, CaptureIndex, NodeStatus, PortState, StatusReport
from flashspark.cluster.runtimes import ComposeRuntime, image_id, read_log, runtime_for
from flashspark.cluster.state import DeploymentState, NodeProcess, read_state, state_path
from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.cluster.transport import Transport, transport_for
from flashspark.errors import InputError, NodeUnreachable
from flashspark.files import write_atomic
from flashspark.pins import Pins
from flashspark.recipe.model import Recipe
from flashspark.redact import redact
from flashspark.render import api_base_url


def _processes(recipe: Recipe, state: DeploymentState | None) -> dict[int, NodeProcess | None]:
    known = {p.rank: p for p in state.nodes} if state is not None else {}
    return {rank: known.get(rank) for rank in range(len(recipe.nodes))}


def _base_url(recipe: Recipe, state: DeploymentState | None) -> str:
    return state.base_url if state is not None else api_base_url(recipe)


async def _node_status(recipe: Recipe, rank: int, process: NodeProcess | None) -> NodeStatus:
    node = recipe.nodes[rank]
    transport = transport_for(node)
    runtime = runtime_for(recipe)
    entry = NodeStatus(node=node.name, rank=rank, role="head" if rank == 0 else "worker")
    try:
        entry.reachable = (await transport.run(["true"], timeout_s=TIMEOUTS.reach_s)).ok
        if process is not None:
            entry = NodeStatus.model_validate({**entry.model_dump(), **await runtime.describe(transport, process)})
        if isinstance(runtime, ComposeRuntime):
            entry.image_id = await image_id(transport, recipe.cluster.image)
            entry.leftovers = await runtime.leftovers(transport)
        for key, port in node_ports(recipe, rank):
            listening = await transport.run(["ss", "-Hltn", f"sport = :{port}"])
            entry.ports[key] = PortState(port=port, listening=bool(listening.ok and listening.stdout.strip()))
    except NodeUnreachable as error:
        entry.reachable, entry.state, entry.error = False, "unknown", error.message
    return entry


async def status(recipe: Recipe, *, timeouts: Timeouts = PROBE_TIMEOUTS) -> StatusReport:
    """Per node: reachable, runtime state, image, ports; for the head's API: health and served model."""
    state = read_state(state_path(recipe))
    processes = _processes(recipe, state)
    nodes = list(await asyncio.gather(*(_node_status(recipe, r, p) for r, p in processes.items())))
    api = await probe_api(_base_url(recipe, state), recipe.api_key, timeouts=timeouts)
    serving = any(m.id == recipe.model.served_name for m in api.models)
    report = StatusReport(
        deployment=recipe.cluster.name,
        profile=recipe.profile.name,
        runtime=recipe.cluster.runtime,
        base_url=api.base_url,
        run_dir=state.run_dir if state is not None else None,
        nodes=nodes,
        api=api,
        running=serving and api.health == 200 and all(n.state == "running" for n in nodes),
    )
    if isinstance(runtime_for(recipe), ComposeRuntime):
        ids = {n.image_id for n in nodes}
        report.same_image_everywhere = len(ids) == 1 and None not in ids
    return report


async def read_logs(recipe: Recipe, *, lines: int, since: str | None = None) -> list[tuple[str, str]]:
    """(node, redacted log tail) for every node of the recorded deployment."""
    runtime = runtime_for(recipe)
    secrets = recipe.secret_values()
    out = []
    for rank, process in _processes(recipe, read_state(state_path(recipe))).items():
        name = recipe.nodes[rank].name
        if process is None:
            out.append((name, "(no engine recorded on this node)"))
            continue
        try:
            text = await read_log(runtime, transport_for(recipe.nodes[rank]), process, lines=lines, since=since)
        except NodeUnreachable as error:
            text = f"(unreachable: {error.message})"
        out.append((name, redact(text, secrets)))
    return out


async def follow_logs(recipe: Recipe, *, since: str | None = None) -> AsyncIterator[tuple[str, str]]:
    """(node, line) from every node as they are written, until the caller stops."""
    runtime = runtime_for(recipe)
    secrets = recipe.secret_values()
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    streams: list[asyncio.subprocess.Process] = []
    pumps: list[asyncio.Task[None]] = []

    async def pump(stream: asyncio.subprocess.Process, node: str) -> None:
        assert stream.stdout is not None
        async for raw in stream.stdout:
            await queue.put((node, redact(raw.decode(errors="replace").rstrip("\n"), secrets)))

    for rank, process in _processes(recipe, read_state(state_path(recipe))).items():
        if process is None:
            continue
        argv = transport_for(recipe.nodes[rank]).local_argv(
            runtime.log_argv(process, lines=0, follow=True, since=since)
        )
        # stdin stays open: closing it is how the remote follower learns to stop
        stream = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        streams.append(stream)
        pumps.append(asyncio.create_task(pump(stream, process.node)))
    try:
        while True:
            yield await queue.get()
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for stream in streams:
            if stream.returncode is None:
                if stream.stdin is not None:
                    stream.stdin.close()  # the remote follower ends with its stdin
                stream.kill()
            await stream.wait()


# --- capture -----------------------------------------------------------------------------


async def _run_text(transport: Transport, argv: list[str]) -> str | None:
    result = await transport.run(argv, timeout_s=TIMEOUTS.command_s)
    return result.stdout if result.ok else None


async def _capture_node(recipe: Recipe, rank: int, process: NodeProcess | None) -> dict[str, str]:
    """The node's files of a capture: name -> text (not yet redacted)."""
    node = recipe.nodes[rank]
    transport = transport_for(node)
    runtime = runtime_for(recipe)
    files: dict[str, str] = {}
    try:
        files["host.txt"] = (
            await _run_text(transport, ["sh", "-c", "hostname; date -u +%Y-%m-%dT%H:%M:%SZ; uname -a; uptime"]) or ""
        )
        if isinstance(runtime, ComposeRuntime):
            files["containers.txt"] = (
                await _run_text(
                    transport,
                    ["docker", "ps", "-a", "--no-trunc", "--filter", f"label={runtime.label}", "--format", "json"],
                )
                or ""
            )
            if process is not None and process.container:
                files["inspect.json"] = await _run_text(transport, ["docker", "inspect", process.container]) or ""
            files["image.txt"] = (
                await _run_text(transport, ["docker", "image", "inspect", recipe.cluster.image]) or "(image absent)\n"
            )
        elif process is not None:
            files["processes.txt"] = (
                await _run_text(transport, ["ps", "-o", "pid,pgid,etime,rss,args", "-g", str(process.pgid)]) or ""
            )
        if process is not None:
            files["engine.json"] = json.dumps(await runtime.describe(transport, process), indent=2)
            files["log.tail"] = await read_log(runtime, transport, process, lines=200)
        smi = await transport.run(
            ["sh", "-c", "command -v nvidia-smi >/dev/null && nvidia-smi"], timeout_s=TIMEOUTS.command_s
        )
        if smi.ok:
            files["nvidia-smi.txt"] = smi.stdout
    except NodeUnreachable as error:
        files["unreachable.txt"] = error.message + "\n"
    return files


async def capture(recipe: Recipe, out_dir: Path, *, timeouts: Timeouts = PROBE_TIMEOUTS) -> CaptureIndex:
    """Write the evidence bundle into out_dir (one folder per node, `api/`, capture.json); return the index."""
    state = read_state(state_path(recipe))
    per_node = await asyncio.gather(*(_capture_node(recipe, r, p) for r, p in _processes(recipe, state).items()))
    api = await probe_api(_base_url(recipe, state), recipe.api_key, metrics=True, timeouts=timeouts)
    try:
        images = await image_pins(recipe, {r: transport_for(n) for r, n in enumerate(recipe.nodes)})
    except NodeUnreachable:
        images = Pins(image=recipe.cluster.image)
    secrets = recipe.secret_values()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def put(relative: str, text: str) -> None:
        clean = redact(text, secrets)
        write_atomic(out_dir / relative, clean)
        written[relative] = hashlib.sha256(clean.encode()).hexdigest()

    for rank, files in enumerate(per_node):
        for name, text in files.items():
            put(f"{recipe.nodes[rank].name}/{name}", text)
    if api.metrics is not None:
        put("api/metrics.txt", api.metrics)
    put("api/api.json", api.model_dump_json(indent=2))
    index = CaptureIndex(
        directory=str(out_dir),
        deployment=recipe.cluster.name,
        profile=recipe.profile.name,
        runtime=recipe.cluster.runtime,
        taken_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        pins=images.model_copy(
            update={
                "vllm_version": api.version,
                "runtime": recipe.cluster.runtime,
                "model": recipe.model.id,
                "model_revision": recipe.model.revision,
            }
        ),
        files=written,
    )
    put("capture.json", index.model_dump_json(indent=2))
    return index


def diff_captures(a: Path, b: Path, *, context: int = 2, max_lines: int = 80) -> CaptureDiff:
    """What changed between two captures: files added/removed/changed, text diffs, metric counter deltas."""

    def index(root: Path) -> dict[str, str]:
        try:
            return dict(json.loads((root / "capture.json").read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"{root} is not a FlashSpark capture (no readable capture.json)",
                where=str(root),
                fix="point at folders written by `flashspark capture`",
            ) from exc

    left, right = index(a), index(b)
    changed = sorted(k for k in left.keys() & right.keys() if left[k] != right[k] and k != "capture.json")
    diffs = {}
    for name in changed:
        lines = list(
            difflib.unified_diff(
                (a / name).read_text().splitlines(),
                (b / name).read_text().splitlines(),
                f"A/{name}",
                f"B/{name}",
                n=context,
                lineterm="",
            )
        )
        diffs[name] = lines[:max_lines] + (
            [f"... {len(lines) - max_lines} more lines"] if len(lines) > max_lines else []
        )
    report = CaptureDiff(
        a=str(a),
        b=str(b),
        only_in_a=sorted(left.keys() - right.keys()),
        only_in_b=sorted(right.keys() - left.keys()),
        changed=changed,
        diffs=diffs,
    )
    if "api/metrics.txt" in left and "api/metrics.txt" in right:
        before = parse_metrics((a / "api/metrics.txt").read_text())
        after = parse_metrics((b / "api/metrics.txt").read_text())
        delta = after.minus(before)
        report.counter_deltas = {name: round(v, 6) for name, v in sorted(delta.counters.items()) if v}
    return report
