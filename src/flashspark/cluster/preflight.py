"""Preflight: check every node before anything starts anywhere.

Per node: reachable; the runtime present (the vLLM executable, or docker and
compose); the model present; the ports the node will bind free; its
VLLM_HOST_IP really one of its addresses (a worker bound to the head's IP
fails later in ZMQ with "Cannot assign requested address"); its fabric
interface present and up; its host facts (kernel, driver, engine versions,
MTU) the same as the other nodes' and not in the known-bad table. Each failure
names the node and the fix. Nodes are checked in parallel; an unreachable
node gets no further checks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from flashspark.cluster.gid import resolve_gid
from flashspark.cluster.hostfacts import MUST_AGREE, HostFacts, KnownBad, load_known_bad, read_host_facts
from flashspark.cluster.node_cache import probe_cache
from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.cluster.transport import Transport, transport_for
from flashspark.errors import NodeUnreachable
from flashspark.recipe.model import Node, Recipe
from flashspark.render.launch import resolve_model_path

IMAGE_CHECK = "image present"
GID_CHECK = "RoCE GID index"


@dataclass(frozen=True)
class NodeCheck:
    node: str
    check: str
    ok: bool
    detail: str = ""
    fix: str = ""
    value: str = ""  # what the check resolved, when the launch needs it (the GID index)


def node_ports(recipe: Recipe, rank: int) -> list[tuple[str, int]]:
    """The TCP ports a rank binds: the head serves the API and the rendezvous."""
    if rank != 0:
        return []
    ports = [("VLLM_PORT", recipe.api.port)]
    if len(recipe.nodes) > 1:
        ports.append(("MASTER_PORT", recipe.cluster.master_port))
    return ports


async def check_node(recipe: Recipe, rank: int, transport: Transport) -> list[NodeCheck]:
    node = recipe.nodes[rank]
    name = node.name
    try:
        reached = await transport.run(["hostname"], timeout_s=TIMEOUTS.reach_s)
        if reached.timed_out:
            # One stalled handshake (a node busy stopping an engine) is not a dead node: a second try tells.
            reached = await transport.run(["hostname"], timeout_s=TIMEOUTS.reach_s)
    except NodeUnreachable as error:
        return [NodeCheck(name, "reachable", False, error.message, error.fix or "")]
    checks = [NodeCheck(name, "reachable", reached.ok, reached.stdout.strip() or reached.stderr.strip())]

    if recipe.cluster.runtime == "process":
        vllm_bin = node.vllm_bin or recipe.cluster.vllm_bin
        found = await transport.run(["sh", "-c", 'command -v "$1"', "flashspark-check", vllm_bin])
        checks.append(
            NodeCheck(
                name,
                "runtime",
                found.ok,
                found.stdout.strip() or f"{vllm_bin} not found",
                "" if found.ok else "install vLLM on this node or set VLLM_BIN to its executable",
            )
        )
    else:
        found = await transport.run(["docker", "compose", "version"])
        checks.append(
            NodeCheck(
                name,
                "runtime",
                found.ok,
                (found.stdout or found.stderr).strip()[:120],
                "" if found.ok else "install docker and the compose v2 plugin on this node",
            )
        )
        if found.ok:
            image = recipe.cluster.image
            inspected = await transport.run(["docker", "image", "inspect", "-f", "{{.Id}}", image])
            present = inspected.ok and inspected.stdout.strip().startswith("sha256:")
            checks.append(
                NodeCheck(
                    name,
                    IMAGE_CHECK,
                    present,
                    inspected.stdout.strip() if present else f"{image} not on this node",
                    "" if present else f"build or load {image} on this node (FlashSpark never pulls at launch)",
                    value=inspected.stdout.strip() if present else "",
                )
            )

    model = resolve_model_path(recipe)
    if not model.startswith("/") and node.hf_cache:
        checks.append(await check_snapshot(recipe, node, transport))
    if model.startswith("/"):
        model_found = await transport.run(["test", "-f", f"{model}/config.json"])
        checks.append(
            NodeCheck(
                name,
                "model",
                model_found.ok,
                model,
                "" if model_found.ok else "copy or build the model at this path on the node",
            )
        )

    for key, port in node_ports(recipe, rank):
        checks.append(await check_port(transport, name, key, port))

    if node.gid_index == "auto":
        checks.append(await check_gid(node, transport))

    if node.vllm_host_ip:
        addresses = await transport.run(["ip", "-o", "addr", "show"])
        mine = any(f" {node.vllm_host_ip}/" in line for line in addresses.stdout.splitlines())
        checks.append(
            NodeCheck(
                name,
                "VLLM_HOST_IP is local",
                mine,
                node.vllm_host_ip,
                "" if mine else f"{node.vllm_host_ip} is not an address of {name}: set this node's own fabric IP",
            )
        )
    return checks


@dataclass(frozen=True)
class PreflightResult:
    checks: list[NodeCheck]
    facts: list[HostFacts] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


async def preflight_with_facts(
    recipe: Recipe, *, control_dir: str | None = None, known_bad: Path | None = None
) -> PreflightResult:
    """Every check on every node, in parallel, and each node's host facts; the caller decides what a
    failure means."""
    table = load_known_bad(known_bad)
    transports = [transport_for(node, control_dir=control_dir) for node in recipe.nodes]
    per_node = await asyncio.gather(*(check_node(recipe, rank, t) for rank, t in enumerate(transports)))
    checks = [check for checks in per_node for check in checks]
    reachable = {c.node for c in checks if c.check == "reachable" and c.ok}
    facts = list(
        await asyncio.gather(
            *(
                read_host_facts(recipe, rank, t)
                for rank, t in enumerate(transports)
                if recipe.nodes[rank].name in reachable
            )
        )
    )
    gids = resolved_gids(checks)
    facts = [f.model_copy(update={"roce_gid": gids.get(f.node)}) for f in facts]
    checks += same_image(checks) + gid_agreement(checks) + host_checks(recipe, facts, table)
    return PreflightResult(checks, facts)


def resolved_gids(checks: list[NodeCheck]) -> dict[str, str]:
    """node -> the RoCE GID index preflight resolved for `gid_index = "auto"` (the launch and the fabric
    check both use it)."""
    return {c.node: c.value for c in checks if c.check == GID_CHECK and c.ok}


async def check_port(transport: Transport, node: str, key: str, port: int) -> NodeCheck:
    """Nothing listens on `port` on the node (`key`: the setting to change when something does)."""
    listening = await transport.run(["ss", "-Hltn", f"sport = :{port}"])
    free = listening.ok and not listening.stdout.strip()
    taken = f"port {port} is taken: {listening.stdout.strip()[:120]}" if listening.ok else listening.stderr.strip()
    return NodeCheck(
        node,
        f"port {port} free",
        free,
        "" if free else taken[:200],
        "" if free else f"stop what listens on {port} or change {key}",
    )


async def preflight(recipe: Recipe, *, control_dir: str | None = None) -> list[NodeCheck]:
    """Every check on every node, in parallel; the caller decides what a failure means."""
    return (await preflight_with_facts(recipe, control_dir=control_dir)).checks


def host_checks(recipe: Recipe, facts: list[HostFacts], table: list[KnownBad]) -> list[NodeCheck]:
    """The fabric interface of each node, the known-bad table, and the facts every node must share."""
    checks = []
    for node in facts:
        if node.error:
            checks.append(NodeCheck(node.node, "host facts", False, node.error, "check that the node runs a POSIX sh"))
            continue
        variables = "NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME"
        if node.interface and node.interface_present is False:
            checks.append(
                NodeCheck(
                    node.node,
                    "fabric interface",
                    False,
                    f"{node.interface} (socket_ifname: {variables}) is not an interface of {node.node}",
                    f"set socket_ifname of {node.node} to its fabric interface (`ip -o link` lists them)",
                )
            )
        elif node.interface:
            up = node.operstate in {"up", "unknown"}  # loopback and some virtual links say "unknown"
            checks.append(
                NodeCheck(
                    node.node,
                    "fabric interface",
                    up,
                    f"{node.interface} {node.operstate}, MTU {node.mtu}",
                    "" if up else f"bring {node.interface} up on {node.node} (`ip link set {node.interface} up`)",
                )
            )
        for entry in table:
            if entry.matches(node, recipe.cluster.fabric):
                found = ", ".join(f"{name}={node.value(name)}" for name in entry.when)
                checks.append(
                    NodeCheck(
                        node.node,
                        f"known-bad: {entry.id}",
                        False,
                        f"{found}: {entry.effect} (source: {entry.source})",
                        entry.fix,
                    )
                )
    for name in MUST_AGREE:
        values = {f.node: f.value(name) for f in facts if f.value(name) is not None}
        if len(set(values.values())) > 1:
            listing = ", ".join(f"{node}={value}" for node, value in sorted(values.items()))
            checks.append(
                NodeCheck(
                    "all nodes",
                    f"same {name}",
                    False,
                    listing,
                    f"make {name} the same on every node (a node that took an update the others did not)",
                )
            )
    return checks


async def check_snapshot(recipe: Recipe, node: Node, transport: Transport) -> NodeCheck:
    """The pinned snapshot in this node's HF cache, every shard complete (the `model verify` probe)."""
    revision = recipe.model.revision or "main"
    report, why = await probe_cache(transport, node.hf_cache or "", recipe.model.id, revision)
    if report is None:
        return NodeCheck(node.name, "model snapshot", False, why, "install python3 on the node")
    detail = f"{recipe.model.id}@{(report.commit or revision)[:12]}: " + (
        f"{len(report.shards)} shards complete" if report.ok else "; ".join(report.problems[:3])
    )
    fix = "" if report.ok else "run `flashspark model prepare` (or copy a verified cache to this node)"
    return NodeCheck(node.name, "model snapshot", report.ok, detail, fix)


async def check_gid(node: Node, transport: Transport) -> NodeCheck:
    if not node.vllm_host_ip:
        return NodeCheck(node.name, GID_CHECK, False, "no fabric IP", "set VLLM_HOST_IP (the RoCE address) for auto")
    hcas = [h.strip() for h in (node.nccl_ib_hca or "").split(",") if h.strip()]
    entry, detail = await resolve_gid(transport, node.vllm_host_ip, hcas)
    if entry is None:
        return NodeCheck(
            node.name,
            GID_CHECK,
            False,
            detail,
            f"check that {node.vllm_host_ip} is configured on the RoCE port (`show_gids`), or set NCCL_IB_GID_INDEX",
        )
    return NodeCheck(node.name, GID_CHECK, True, detail, value=str(entry.index))


def disagreement(checks: list[NodeCheck], check: str, title: str, fix: str, *, width: int = 19) -> list[NodeCheck]:
    """One cross-node check: the value every node resolved for `check` must be the same."""
    found = {c.node: c.value for c in checks if c.check == check and c.ok}
    if len(set(found.values())) <= 1:
        return []
    listing = ", ".join(f"{node}={value[:width]}" for node, value in sorted(found.items()))
    return [NodeCheck("all nodes", title, False, listing, fix)]


def gid_agreement(checks: list[NodeCheck]) -> list[NodeCheck]:
    """NCCL needs one GID index on every rank: refuse nodes that resolved different ones."""
    return disagreement(
        checks,
        GID_CHECK,
        "same RoCE GID index",
        "configure the fabric addresses in the same order on every node, or set NCCL_IB_GID_INDEX per node",
    )


def same_image(checks: list[NodeCheck]) -> list[NodeCheck]:
    """Every node holds the same image ID (a worker on another build diverges)."""
    return disagreement(
        checks, IMAGE_CHECK, "same image", "load the head's image on every node (docker save | ssh worker docker load)"
    )
