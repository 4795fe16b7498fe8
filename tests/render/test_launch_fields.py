"""Each typed setting reaches its own `vllm serve` flag or environment variable, and nothing else
does: the expectations are written from the recipe's fields and vLLM's flag names, not taken from
a rendered plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import Recipe
from flashspark.render.addresses import api_base_url, probe_host
from flashspark.render.launch import render_argv, render_env, render_plan

FULL = """profile = "agent-1m"
[cluster]
name = "fields"
runtime = "{runtime}"
fabric = "{fabric}"
master_addr = "10.0.0.1"
master_port = 29501
vllm_bin = "/opt/vllm/bin/vllm"
[model]
id = "org/model"
revision = "abc123"
served_name = "served"
[api]
host = "127.0.0.1"
port = 8123
[engine]
dtype = "bfloat16"
max_model_len = 4096
max_num_seqs = 3
max_num_batched_tokens = 2048
gpu_memory_utilization = 0.8
block_size = 64
kv_cache_dtype = "fp8"
max_cudagraph_capture_size = 24
enforce_eager = true
trust_remote_code = true
tokenizer_mode = "deepseek_v4"
tool_call_parser = "deepseek_v4"
enable_auto_tool_choice = true
reasoning_parser = "deepseek_v4"
reasoning_config = {{budget = 2}}
default_chat_template_kwargs = {{thinking = false}}
generation_config = "vllm"
enable_prefix_caching = {prefix}
async_scheduling = true
enable_chunked_prefill = {chunked}
enable_flashinfer_autotune = true
allow_long_max_model_len = true
extra_args = ["--seed", "7"]
[generation]
temperature = 0.6
[parallel]
tensor_parallel_size = 2
[[nodes]]
name = "head"
ssh = "spark@10.0.0.1"
vllm_host_ip = "10.0.0.1"
nccl_ib_hca = "rocep1s0f0"
socket_ifname = "enp1s0f0np0"
gid_index = 3
hf_cache = "/data/hf"
env = {{ MY_VAR = "from-node", NODE_API_TOKEN = "sk-node-secret" }}
[[nodes]]
name = "w1"
ssh = "spark@10.0.0.2"
gid_index = "auto"
"""


def recipe(
    tmp_path: Path, *, runtime: str = "process", fabric: str = "roce", prefix: str = "true", chunked: str = "false"
) -> Recipe:
    toml = tmp_path / "c.toml"
    toml.write_text(FULL.format(runtime=runtime, fabric=fabric, prefix=prefix, chunked=chunked))
    return resolve_recipe(config=toml, strict=False).recipe


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def pairs(argv: list[str]) -> dict[str, str | None]:
    """--flag value pairs (None for a switch), from argv[3:]."""
    out: dict[str, str | None] = {}
    rest = argv[3:]
    i = 0
    while i < len(rest):
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            out[rest[i]] = rest[i + 1]
            i += 2
        else:
            out[rest[i]] = None
            i += 1
    return out


def test_every_typed_engine_setting_becomes_its_flag(tmp_path: Path) -> None:
    r = recipe(tmp_path)
    argv = render_argv(r, 0)
    assert argv[:3] == ["/opt/vllm/bin/vllm", "serve", "org/model"]
    flags = pairs(argv)
    expected = {
        "--served-model-name": "served",
        "--revision": "abc123",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--trust-remote-code": None,
        "--dtype": "bfloat16",
        "--tensor-parallel-size": "2",
        "--pipeline-parallel-size": str(r.parallel.pipeline_parallel_size),
        "--distributed-executor-backend": "mp",
        "--kv-cache-dtype": "fp8",
        "--block-size": "64",
        "--max-model-len": "4096",
        "--max-num-seqs": "3",
        "--max-num-batched-tokens": "2048",
        "--max-cudagraph-capture-size": "24",
        "--gpu-memory-utilization": "0.8",
        "--enforce-eager": None,
        "--enable-prefix-caching": None,
        "--async-scheduling": None,
        "--no-enable-chunked-prefill": None,
        "--speculative-config": r.speculative.to_json(),
        "--tokenizer-mode": "deepseek_v4",
        "--tool-call-parser": "deepseek_v4",
        "--enable-auto-tool-choice": None,
        "--reasoning-parser": "deepseek_v4",
        "--reasoning-config": compact(r.engine.reasoning_config),
        "--default-chat-template-kwargs": compact(r.engine.default_chat_template_kwargs),
        "--generation-config": "vllm",
        "--override-generation-config": r.generation.to_json(),
        "--enable-flashinfer-autotune": None,
        "--nnodes": "2",
        "--node-rank": "0",
        "--master-addr": "10.0.0.1",
        "--master-port": "29501",
        "--seed": "7",
    }
    assert flags == expected
    # The file's own values reached the dict-valued flags, merged over the profile's.
    assert r.engine.reasoning_config is not None and r.engine.reasoning_config["budget"] == 2
    assert r.generation.temperature == 0.6
    assert argv[-2:] == ["--seed", "7"]  # extra args last
    worker = render_argv(r, 1)
    assert pairs(worker)["--node-rank"] == "1" and "--headless" in worker and "--headless" not in argv


def test_the_opposite_switches_and_unset_values_render_as_vllm_expects(tmp_path: Path) -> None:
    r = recipe(tmp_path, prefix="false", chunked="true")
    argv = render_argv(r, 0)
    assert "--no-enable-prefix-caching" in argv and "--enable-chunked-prefill" in argv
    bare = resolve_recipe(profile="local-cpu").recipe
    flags = pairs(render_argv(bare, 0))
    for unset in ("--revision", "--nnodes", "--node-rank", "--master-addr", "--headless", "--trust-remote-code"):
        assert unset not in flags, unset


def test_the_environment_of_each_node(tmp_path: Path) -> None:
    r = recipe(tmp_path)
    head_env, head_secrets, head_pending = render_env(r, r.nodes[0])
    assert head_env["HF_HOME"] == "/data/hf" and head_env["VLLM_HOST_IP"] == "10.0.0.1"
    assert head_env["NCCL_IB_HCA"] == "rocep1s0f0" and head_env["NCCL_IB_GID_INDEX"] == "3"
    assert head_env["NCCL_SOCKET_IFNAME"] == head_env["GLOO_SOCKET_IFNAME"] == "enp1s0f0np0"
    assert head_env["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] == "1" and head_env["MY_VAR"] == "from-node"
    assert "NODE_API_TOKEN" not in head_env and "NODE_API_TOKEN" in head_secrets and head_pending == {}
    assert list(head_env) == sorted(head_env)
    worker_env, _, worker_pending = render_env(r, r.nodes[1])
    assert worker_pending == {"NCCL_IB_GID_INDEX": "auto"} and "NCCL_IB_GID_INDEX" not in worker_env
    assert "VLLM_HOST_IP" not in worker_env and "HF_HOME" not in worker_env and "MY_VAR" not in worker_env


def test_containers_get_the_container_cache_and_tcp_gets_no_hca(tmp_path: Path) -> None:
    r = recipe(tmp_path, runtime="compose", fabric="tcp")
    env, _, _ = render_env(r, r.nodes[0])
    assert env["HF_HOME"] == "/cache/huggingface" and env["VLLM_CACHE_ROOT"] == "/cache/huggingface/vllm-cache"
    assert "NCCL_IB_HCA" not in env


def test_the_plan_starts_workers_first_and_names_its_api(tmp_path: Path) -> None:
    r = recipe(tmp_path, runtime="compose")
    plan = render_plan(r)
    assert [n.rank for n in plan.start_order] == [1, 0] and plan.head.name == "head"
    assert [(n.role, n.headless) for n in plan.nodes] == [("head", False), ("worker", True)]
    assert (plan.profile, plan.deployment, plan.runtime, plan.served_model_name) == (
        "agent-1m",
        "fields",
        "compose",
        "served",
    )
    assert (plan.api_host, plan.api_port, plan.api_base_url) == ("127.0.0.1", 8123, "http://127.0.0.1:8123/v1")
    assert all(n.compose is not None for n in plan.nodes) and plan.nodes[0].secret_env == ["NODE_API_TOKEN"]
    assert plan.nodes[1].command_line().startswith("/opt/vllm/bin/vllm serve org/model --served-model-name served")
    (tmp_path / "p").mkdir()
    assert render_plan(recipe(tmp_path / "p", runtime="process")).nodes[0].compose is None


@pytest.mark.parametrize(
    ("host", "probed"),
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "[::1]"), ("fe80::1", "[fe80::1]"), ("10.1.2.3", "10.1.2.3")],
)
def test_the_address_a_client_probes_for_each_bind(host: str, probed: str) -> None:
    assert probe_host(host) == probed


def test_a_local_model_is_served_from_the_models_folder() -> None:
    r = resolve_recipe(profile="local-cpu").recipe
    assert render_argv(r, 0)[2] == f"{r.paths.models_dir}/{r.model.id.removeprefix('local:')}"
    assert api_base_url(r) == f"http://127.0.0.1:{r.api.port}/v1"


def executor_of(sets: list[str]) -> tuple[str | None, str | None]:
    """(--distributed-executor-backend, VLLM_ENABLE_V1_MULTIPROCESSING) of the local profile's head."""
    r = resolve_recipe(profile="local-cpu", sets=sets).recipe
    argv = render_argv(r, 0)
    flag = "--distributed-executor-backend"
    backend = argv[argv.index(flag) + 1] if flag in argv else None
    return backend, render_env(r, r.nodes[0])[0].get("VLLM_ENABLE_V1_MULTIPROCESSING")


def test_one_rank_runs_in_process_and_several_ranks_are_left_to_vllm() -> None:
    # one rank: 'uni', with vLLM-CPU's multiprocessing off (else it turns 'uni' back into 'mp')
    assert executor_of([]) == ("uni", "0")
    # two ranks, by TP or by PP: vLLM's own choice (mp), and multiprocessing left alone
    assert executor_of(["TENSOR_PARALLEL_SIZE=2", "parallel.gpus_per_node=2"]) == (None, None)
    assert executor_of(["PIPELINE_PARALLEL_SIZE=2", "parallel.gpus_per_node=2"]) == (None, None)
    # a backend named in the recipe wins over the in-process default
    assert executor_of(["parallel.distributed_executor_backend=mp"]) == ("mp", None)
    assert executor_of(["parallel.single_rank_in_process=false"]) == (None, None)
