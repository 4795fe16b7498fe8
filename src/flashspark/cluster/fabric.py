"""The fabric check: an all-reduce across the nodes of the TP group before the 10-minute boot.

Every rank runs torch.distributed from the engine's own environment (the venv beside vllm_bin on
the process runtime, the image on compose) with exactly the variables the launch plan renders for
that node: NCCL over RoCE on GPU nodes, gloo over GLOO_SOCKET_IFNAME where there is no GPU. It
reports the latency and bus bandwidth per message size, or, when the ranks cannot meet, which node,
interface and variable were involved, in torch's own words.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from flashspark.cluster.transport import Transport, transport_for
from flashspark.errors import NodeUnreachable
from flashspark.recipe.model import Recipe
from flashspark.render.launch import render_env

FABRIC_SCHEMA_VERSION = 1
# The all-reduce meets on the rendezvous port + 1: vLLM's own port stays untouched, and the check can
# run while nothing is up.
PORT_OFFSET = 1
#: 8 KB is one TP-2 all-reduce of a 4096-wide hidden state per token (bf16, 1 token); 64 KB a DSpark
#: verify step of a few streams; 1 and 16 MiB show the bandwidth.
DEFAULT_SIZES = (8 * 1024, 64 * 1024, 1 << 20, 16 << 20)
# How torch says that a rank could not reach the rendezvous (or waited in vain for the others).
UNREACHABLE_SIGNS = ("timed out", "timeout", "failed to connect", "connection refused", "no route to host")
# Seconds beyond the rendezvous budget before a rank that never answered is given up.
GRACE_S = 60.0


class SizeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes: int
    iterations: int
    p50_us: float = Field(description="Median time of one all-reduce at rank 0.")
    max_us: float
    bus_gbps: float = Field(description="Bus bandwidth, nccl-tests' convention: bytes / time x 2(n-1)/n, in GB/s.")


class RankOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int
    node: str
    ok: bool
    stage: str = Field(description="import, rendezvous, all-reduce, done; or start when it never ran.")
    error: str | None = None
    interface: str | None = None
    variable: str = Field(description="The variable naming the interface: GLOO_SOCKET_IFNAME or NCCL_SOCKET_IFNAME.")
    torch: str | None = None
    nccl: str | None = None
    rendezvous_s: float | None = None


class FabricProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    interface: str | None
    variable: str
    message: str
    fix: str


class FabricReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = FABRIC_SCHEMA_VERSION
    deployment: str
    backend: str
    world_size: int
    master: str
    ok: bool
    skipped: str | None = Field(default=None, description="Why no all-reduce ran (a single node).")
    sizes: list[SizeResult] = Field(default_factory=list)
    ranks: list[RankOutcome] = Field(default_factory=list)
    problems: list[FabricProblem] = Field(default_factory=list)


def script_source() -> bytes:
    return resources.files("flashspark.cluster").joinpath("scripts/allreduce.py").read_bytes()


def backend_of(recipe: Recipe) -> str:
    """NCCL over RoCE on DGX Spark; gloo over plain sockets where there is no GPU (fabric = tcp)."""
    return "nccl" if recipe.cluster.fabric == "roce" else "gloo"


def master_of(recipe: Recipe) -> str:
    return recipe.cluster.master_addr or recipe.head.vllm_host_ip or "127.0.0.1"


def rank_env(recipe: Recipe, rank: int, gids: Mapping[str, str] | None = None) -> dict[str, str]:
    """The node's rendered variables, as its engine gets them: an `auto` GID index as preflight resolved
    it (left to NCCL's own choice when it was not resolved, as by `flashspark fabric` alone)."""
    node = recipe.nodes[rank]
    env, _secrets, pending = render_env(recipe, node)
    if pending.get("NCCL_IB_GID_INDEX") == "auto" and gids and node.name in gids:
        env["NCCL_IB_GID_INDEX"] = gids[node.name]
    return env


def rank_argv(
    recipe: Recipe,
    rank: int,
    *,
    port: int,
    sizes: tuple[int, ...],
    timeout_s: float,
    gids: Mapping[str, str] | None = None,
) -> list[str]:
    """The argv that runs one rank on its node: the engine's Python, the node's rendered variables."""
    node = recipe.nodes[rank]
    env = rank_env(recipe, rank, gids)
    args = [
        master_of(recipe),
        str(port),
        str(rank),
        str(len(recipe.nodes)),
        backend_of(recipe),
        f"{timeout_s:g}",
        ",".join(str(s) for s in sizes),
    ]
    if recipe.cluster.runtime == "compose":
        argv = ["docker", "run", "--rm", "-i", "--network", "host", "--ipc", "host"]
        argv += ["--shm-size", recipe.cluster.shm_size]
        if recipe.cluster.fabric == "roce":
            argv += ["--gpus", "all", "--ulimit", "memlock=-1", "--device", "/dev/infiniband:/dev/infiniband"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        return [*argv, "--entrypoint", "python3", recipe.cluster.image, "-", *args]
    # The Python beside the vLLM executable: a venv's bin/ (the embedded engine, a pip install).
    locate = 'b=$(command -v "$1") || { echo "vLLM executable $1 not found" >&2; exit 127; }; shift; '
    locate += 'exec "$(dirname "$b")/python" "$@"'
    variables = [f"{key}={value}" for key, value in env.items()]
    return ["env", *variables, "sh", "-c", locate, "flashspark-fabric", recipe.vllm_bin_of(node), "-", *args]


async def _run_rank(
    recipe: Recipe,
    rank: int,
    transport: Transport,
    *,
    port: int,
    sizes: tuple[int, ...],
    timeout_s: float,
    gids: Mapping[str, str] | None,
) -> tuple[RankOutcome, list[dict[str, float]]]:
    """One rank's outcome and its raw timings (rank 0's become the report's sizes)."""
    node = recipe.nodes[rank]
    variable = "NCCL_SOCKET_IFNAME" if backend_of(recipe) == "nccl" else "GLOO_SOCKET_IFNAME"
    base = {"rank": rank, "node": node.name, "variable": variable, "interface": rank_env(recipe, rank).get(variable)}
    argv = rank_argv(recipe, rank, port=port, sizes=sizes, timeout_s=timeout_s, gids=gids)
    try:
        result = await transport.run(argv, stdin=script_source(), timeout_s=timeout_s + GRACE_S)
    except NodeUnreachable as error:
        return RankOutcome(**base, ok=False, stage="start", error=error.message), []
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = (result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}")[-600:]
        return RankOutcome(**base, ok=False, stage="start", error=why), []
    outcome = RankOutcome(
        **base,
        ok=bool(data.get("ok")),
        stage=str(data.get("stage", "start")),
        error=data.get("error"),
        torch=data.get("torch"),
        nccl=data.get("nccl"),
        rendezvous_s=data.get("rendezvous_s"),
    )
    return outcome, list(data.get("results", []))


def problems_of(recipe: Recipe, ranks: list[RankOutcome], port: int, timeout_s: float) -> list[FabricProblem]:
    """Each failed rank as a problem naming its node, interface and variable, with the likely fix."""
    problems: list[tuple[int, FabricProblem]] = []
    master = f"{master_of(recipe)}:{port}"
    for outcome in ranks:
        if outcome.ok:
            continue
        error = outcome.error or "no error given"
        where = f"{outcome.variable}={outcome.interface}" if outcome.interface else f"{outcome.variable} unset"
        if "Unable to find address for" in error or ("interface" in error.lower() and "not found" in error.lower()):
            message = f"{outcome.node}: interface {outcome.interface!r} ({where}) does not exist there: {error}"
            fix = f"set socket_ifname of {outcome.node} to its fabric interface (`ip -o link` on {outcome.node})"
        elif outcome.stage == "rendezvous" and any(sign in error.lower() for sign in UNREACHABLE_SIGNS):
            message = (
                f"{outcome.node} (rank {outcome.rank}): the ranks did not meet at {master} within {timeout_s:g} s "
                f"({where}): {error}"
            )
            fix = (
                f"check that every node reaches {master} over its fabric interface (MASTER_ADDR, firewall, "
                "routes) and that the interface each node names carries the fabric addresses"
            )
        elif outcome.stage == "start":
            message = f"{outcome.node} (rank {outcome.rank}): the check could not start there: {error}"
            fix = "check the node's vLLM executable (vllm_bin) or image: the check runs the engine's own Python"
        else:
            message = f"{outcome.node} (rank {outcome.rank}) failed during {outcome.stage} ({where}): {error}"
            fix = "read torch's message; the variables are the ones `config render` shows for this node"
        problems.append(
            (
                _priority(outcome),
                FabricProblem(
                    node=outcome.node, interface=outcome.interface, variable=outcome.variable, message=message, fix=fix
                ),
            )
        )
    # Causes before symptoms: a missing interface or a rank that never started makes the others time out,
    # and rank 0 waiting for its clients is the last thing to blame.
    return [problem for _, problem in sorted(problems, key=lambda pair: pair[0])]


def _priority(outcome: RankOutcome) -> int:
    error = outcome.error or ""
    if "Unable to find address for" in error:
        return 0
    if outcome.stage in {"start", "import"}:
        return 1
    return 3 if outcome.rank == 0 else 2


async def fabric_check(
    recipe: Recipe,
    *,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    port: int | None = None,
    timeout_s: float = 30.0,
    gids: Mapping[str, str] | None = None,
) -> FabricReport:
    """Run the all-reduce on every node of the recipe at once; a report, never an exception for a failed
    fabric (a node that cannot be reached is a failed rank). `gids`: node -> the GID index preflight
    resolved for `gid_index = "auto"`."""
    backend = backend_of(recipe)
    port = port if port is not None else recipe.cluster.master_port + PORT_OFFSET
    base = {
        "deployment": recipe.cluster.name,
        "backend": backend,
        "world_size": len(recipe.nodes),
        "master": f"{master_of(recipe)}:{port}",
    }
    if len(recipe.nodes) < 2:
        return FabricReport(**base, ok=True, skipped="one node: no fabric between ranks to check")
    transports = [transport_for(node) for node in recipe.nodes]
    outcomes = await asyncio.gather(
        *(
            _run_rank(recipe, rank, t, port=port, sizes=sizes, timeout_s=timeout_s, gids=gids)
            for rank, t in enumerate(transports)
        )
    )
    ranks = [outcome for outcome, _ in outcomes]
    raw = [timings for _, timings in outcomes]
    n = len(recipe.nodes)
    results = [
        SizeResult(
            bytes=int(row["bytes"]),
            iterations=int(row["iterations"]),
            p50_us=row["p50_us"],
            max_us=row["max_us"],
            bus_gbps=round(row["bytes"] / (row["p50_us"] * 1e-6) * 2 * (n - 1) / n / 1e9, 3),
        )
        for row in raw[0]
    ]
    problems = problems_of(recipe, ranks, port, timeout_s)
    return FabricReport(**base, ok=not problems, sizes=results, ranks=ranks, problems=problems)
