"""The launch plan: for every node, the exact `vllm serve` argv and its environment.

Pure functions of a `Recipe`; no I/O. Rank 0 serves the API; every rank >= 1
gets `--headless` and its own `VLLM_HOST_IP`. Secrets never enter argv (it is
visible in `ps`) nor the plain env: they are listed by name in `secret_env`
and reach the process through an owner-only env file at launch time.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Literal

from pydantic import Field

from flashspark.recipe.model import Frozen, Node, Recipe
from flashspark.render.addresses import api_base_url
from flashspark.render.compose import labels, render_compose
from flashspark.render.monitoring import with_monitoring
from flashspark.secrets import is_secret_name

PLAN_SCHEMA_VERSION = 1
CONTAINER_HF_HOME = "/cache/huggingface"


class NodeLaunch(Frozen):
    """How one node starts its part of the deployment."""

    rank: int
    name: str
    role: Literal["head", "worker", "router"]
    ssh: str
    headless: bool
    argv: list[str] = Field(description="The full `vllm serve ...` argument list.")
    env: dict[str, str] = Field(description="Variables the node's vLLM process gets (no secrets).")
    secret_env: list[str] = Field(
        default_factory=list, description="Names of secret variables delivered via an env file."
    )
    pending: dict[str, str] = Field(
        default_factory=dict,
        description="Values resolved on the node at launch (e.g. NCCL_IB_GID_INDEX=auto).",
    )
    compose: dict[str, Any] | None = Field(
        default=None, description="The node's compose file, for the compose runtime."
    )

    def command_line(self) -> str:
        """The argv as one shell-quoted line, for people to read."""
        return shlex.join(self.argv)


class LaunchPlan(Frozen):
    """Every node's launch, in start order reversed: workers first, then the head."""

    schema_version: int = PLAN_SCHEMA_VERSION
    profile: str
    deployment: str
    runtime: Literal["compose", "process"]
    served_model_name: str
    api_host: str
    api_port: int
    api_base_url: str = Field(description="Where clients on the head reach the API.")
    nodes: list[NodeLaunch]

    @property
    def head(self) -> NodeLaunch:
        return self.nodes[0]

    @property
    def start_order(self) -> list[NodeLaunch]:
        """Workers first (highest rank first), the head last: avoids the mp init race."""
        return sorted(self.nodes, key=lambda n: -n.rank)


def resolve_model_path(recipe: Recipe) -> str:
    """`local:NAME` models live in FlashSpark's model folder; anything else is passed as is."""
    name = recipe.model.local_name
    return f"{recipe.paths.models_dir}/{name}" if name is not None else recipe.model.id


def render_argv(recipe: Recipe, rank: int) -> list[str]:
    """The `vllm serve` argument list for one rank."""
    engine, spec, parallel = recipe.engine, recipe.speculative, recipe.parallel
    argv: list[str] = [recipe.cluster.vllm_bin, "serve", resolve_model_path(recipe)]

    def flag(name: str, value: object) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            value = json.dumps(value, separators=(",", ":"))
        argv.extend([f"--{name}", str(value)])

    def switch(name: str, on: bool | None) -> None:
        if on:
            argv.append(f"--{name}")

    flag("served-model-name", recipe.model.served_name)
    flag("revision", recipe.model.revision)
    flag("host", recipe.api.host)
    flag("port", recipe.api.port)
    switch("trust-remote-code", engine.trust_remote_code)
    flag("dtype", engine.dtype)
    flag("tensor-parallel-size", parallel.tensor_parallel_size)
    flag("pipeline-parallel-size", parallel.pipeline_parallel_size)
    flag("distributed-executor-backend", parallel.executor_backend)
    flag("kv-cache-dtype", engine.kv_cache_dtype)
    flag("block-size", engine.block_size)
    flag("max-model-len", engine.max_model_len)
    flag("max-num-seqs", engine.max_num_seqs)
    flag("max-num-batched-tokens", engine.max_num_batched_tokens)
    flag("max-cudagraph-capture-size", recipe.capture_size)
    flag("gpu-memory-utilization", engine.gpu_memory_utilization)
    switch("enforce-eager", engine.enforce_eager)
    if engine.enable_prefix_caching is not None:
        argv.append("--enable-prefix-caching" if engine.enable_prefix_caching else "--no-enable-prefix-caching")
    switch("async-scheduling", engine.async_scheduling)
    if engine.enable_chunked_prefill is not None:
        argv.append("--enable-chunked-prefill" if engine.enable_chunked_prefill else "--no-enable-chunked-prefill")
    if spec.enabled:
        flag("speculative-config", spec.to_json())
    flag("tokenizer-mode", engine.tokenizer_mode)
    flag("tool-call-parser", engine.tool_call_parser)
    switch("enable-auto-tool-choice", engine.enable_auto_tool_choice)
    flag("reasoning-parser", engine.reasoning_parser)
    flag("reasoning-config", engine.reasoning_config)
    flag("default-chat-template-kwargs", engine.default_chat_template_kwargs)
    flag("generation-config", engine.generation_config)
    flag("override-generation-config", recipe.generation.to_json())
    switch("enable-flashinfer-autotune", engine.enable_flashinfer_autotune)
    if len(recipe.nodes) > 1:
        flag("nnodes", len(recipe.nodes))
        flag("node-rank", rank)
        flag("master-addr", recipe.cluster.master_addr)
        flag("master-port", recipe.cluster.master_port)
        if rank > 0:
            argv.append("--headless")
    argv.extend(engine.extra_args)
    return argv


def render_env(recipe: Recipe, node: Node) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """(plain env, secret names, values to resolve at launch) for one node's process."""
    env: dict[str, str] = {}
    for group in recipe.env.values():
        env.update(group)
    if recipe.engine.allow_long_max_model_len:
        env["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
    if recipe.parallel.executor_backend == "uni":
        # vLLM-CPU turns 'uni' back into 'mp' unless this is off (its OpenMP set-up lives in the mp
        # executor). The API server keeps its engine core in a process of its own either way.
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if recipe.cluster.runtime == "compose":
        env["HF_HOME"] = CONTAINER_HF_HOME
        env["VLLM_CACHE_ROOT"] = f"{CONTAINER_HF_HOME}/vllm-cache"
    elif node.hf_cache:
        env["HF_HOME"] = node.hf_cache
    if node.vllm_host_ip:
        env["VLLM_HOST_IP"] = node.vllm_host_ip
    if node.nccl_ib_hca and recipe.cluster.fabric == "roce":
        env["NCCL_IB_HCA"] = node.nccl_ib_hca
    if node.socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = node.socket_ifname
        env["GLOO_SOCKET_IFNAME"] = node.socket_ifname
    env.update(node.env)
    pending: dict[str, str] = {}
    if isinstance(node.gid_index, int):
        env["NCCL_IB_GID_INDEX"] = str(node.gid_index)
    elif node.gid_index == "auto":
        pending["NCCL_IB_GID_INDEX"] = "auto"
    # Secret-named variables never enter the plain env (rendered, printed): they go to the
    # node's owner-only env file with the typed secrets.
    plain = {name: value for name, value in env.items() if not is_secret_name(name)}
    return dict(sorted(plain.items())), list(recipe.secret_env(node)), pending


def render_plan(recipe: Recipe) -> LaunchPlan:
    """The launch plan for every node of a resolved recipe."""
    nodes = []
    for rank, node in enumerate(recipe.nodes):
        env, secrets, pending = render_env(recipe, node)
        launch = NodeLaunch(
            rank=rank,
            name=node.name,
            role="head" if rank == 0 else "worker",
            ssh=node.ssh,
            headless=rank > 0,
            argv=render_argv(recipe, rank),
            env=env,
            secret_env=secrets,
            pending=pending,
        )
        if recipe.cluster.runtime == "compose":
            compose = render_compose(recipe, node, rank=rank, argv=launch.argv, env=env, has_secrets=bool(secrets))
            if rank == 0 and recipe.watch.monitoring:
                compose = with_monitoring(recipe, compose, labels(recipe, node, rank))
            launch = launch.model_copy(update={"compose": compose})
        nodes.append(launch)
    return LaunchPlan(
        profile=recipe.profile.name,
        deployment=recipe.cluster.name,
        runtime=recipe.cluster.runtime,
        served_model_name=recipe.model.served_name,
        api_host=recipe.api.host,
        api_port=recipe.api.port,
        api_base_url=api_base_url(recipe),
        nodes=nodes,
    )
