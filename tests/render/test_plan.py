"""The launch plan, checked against the reference recipe's own flag table (recipe-facts §4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashspark.recipe import resolve_recipe
from flashspark.render import render_plan
from flashspark.render.files import write_plan_files


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.fixture
def two_node_plan(filled_env: Path):
    return render_plan(resolve_recipe(config=filled_env, profile="agent-1m").recipe)


def test_rank1_is_headless_with_its_own_host_ip(two_node_plan) -> None:
    head, worker = two_node_plan.nodes
    assert worker.rank == 1 and worker.headless
    assert "--headless" in worker.argv and "--headless" not in head.argv
    assert flag_value(worker.argv, "--node-rank") == "1"
    assert flag_value(head.argv, "--node-rank") == "0"
    assert worker.env["VLLM_HOST_IP"] == "192.168.192.4"
    assert head.env["VLLM_HOST_IP"] == "192.168.192.3"


def test_both_ranks_share_the_mission_flags(two_node_plan) -> None:
    for node in two_node_plan.nodes:
        argv = node.argv
        assert argv[:3] == ["vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash-DSpark"]
        assert flag_value(argv, "--tensor-parallel-size") == "2"
        assert flag_value(argv, "--nnodes") == "2"
        assert flag_value(argv, "--master-addr") == "192.168.192.3"
        assert flag_value(argv, "--master-port") == "25440"
        assert flag_value(argv, "--distributed-executor-backend") == "mp"
        assert flag_value(argv, "--kv-cache-dtype") == "nvfp4_ds_mla"
        assert flag_value(argv, "--max-model-len") == "1048576"
        assert flag_value(argv, "--max-num-seqs") == "6"
        assert flag_value(argv, "--max-num-batched-tokens") == "8192"
        assert flag_value(argv, "--block-size") == "256"
        assert flag_value(argv, "--gpu-memory-utilization") == "0.8"
        assert flag_value(argv, "--max-cudagraph-capture-size") == "36"
        assert json.loads(flag_value(argv, "--speculative-config")) == {
            "method": "dspark",
            "num_speculative_tokens": 5,
        }
        assert flag_value(argv, "--generation-config") == "vllm"
        assert json.loads(flag_value(argv, "--override-generation-config")) == {
            "temperature": 0.6,
            "top_p": 0.95,
            "top_k": 40,
        }
        assert json.loads(flag_value(argv, "--default-chat-template-kwargs"))["thinking"] is False


def test_workers_start_before_the_head(two_node_plan) -> None:
    assert [n.rank for n in two_node_plan.start_order] == [1, 0]


def test_per_node_fabric_env_and_profile_groups(two_node_plan) -> None:
    for node in two_node_plan.nodes:
        assert node.env["NCCL_IB_HCA"] == "rocep1s0f0"
        assert node.env["NCCL_SOCKET_IFNAME"] == "enp1s0f0np0"
        assert node.env["NCCL_IB_GID_INDEX"] == "3"
        assert node.env["VLLM_USE_B12X_MOE"] == "1"
        assert node.env["VLLM_DSPARK_GPU_REJECTED_CONTEXT_MASK"] == "1"
        assert node.env["HF_HOME"] == "/cache/huggingface"


def test_gid_auto_is_left_for_launch_time(filled_env: Path) -> None:
    plan = render_plan(resolve_recipe(config=filled_env, sets=["NCCL_IB_GID_INDEX=auto"]).recipe)
    for node in plan.nodes:
        assert "NCCL_IB_GID_INDEX" not in node.env
        assert node.pending == {"NCCL_IB_GID_INDEX": "auto"}


def _four_nodes(tmp_path: Path, filled_env: Path) -> Path:
    path = tmp_path / "four.env"
    path.write_text(
        filled_env.read_text() + "WORKER2_HOST=s@192.168.192.5\nWORKER2_VLLM_HOST_IP=192.168.192.5\n"
        "WORKER3_HOST=s@192.168.192.6\nWORKER3_VLLM_HOST_IP=192.168.192.6\n"
    )
    return path


@pytest.mark.parametrize(
    ("sets", "tp", "pp"), [(["TENSOR_PARALLEL_SIZE=4"], "4", "1"), (["PIPELINE_PARALLEL_SIZE=2"], "2", "2")]
)
def test_four_nodes_render_ranks_0_to_3(tmp_path: Path, filled_env: Path, sets: list[str], tp: str, pp: str) -> None:
    plan = render_plan(resolve_recipe(config=_four_nodes(tmp_path, filled_env), sets=sets).recipe)
    assert [n.rank for n in plan.nodes] == [0, 1, 2, 3]
    assert [n.headless for n in plan.nodes] == [False, True, True, True]
    assert {n.env["VLLM_HOST_IP"] for n in plan.nodes} == {f"192.168.192.{i}" for i in (3, 4, 5, 6)}
    for node in plan.nodes:
        assert flag_value(node.argv, "--nnodes") == "4"
        assert flag_value(node.argv, "--node-rank") == str(node.rank)
        assert flag_value(node.argv, "--tensor-parallel-size") == tp
        assert flag_value(node.argv, "--pipeline-parallel-size") == pp


def test_local_cpu_plan_is_single_node_without_rendezvous() -> None:
    plan = render_plan(resolve_recipe(profile="local-cpu").recipe)
    (node,) = plan.nodes
    assert node.compose is None
    assert "--nnodes" not in node.argv and "--headless" not in node.argv
    assert "--enforce-eager" in node.argv
    assert json.loads(flag_value(node.argv, "--speculative-config"))["method"] == "ngram"
    assert plan.api_base_url == "http://127.0.0.1:8888/v1"


def test_wildcard_bind_is_probed_on_loopback(filled_env: Path) -> None:
    plan = render_plan(
        resolve_recipe(
            config=filled_env, sets=["VLLM_HOST=0.0.0.0", "EXPOSE_API=1", "VLLM_API_KEY=sk-wildcard", "VLLM_PORT=9001"]
        ).recipe
    )
    assert plan.api_base_url == "http://127.0.0.1:9001/v1"


def test_allow_long_sets_the_vllm_switch(filled_env: Path) -> None:
    plan = render_plan(resolve_recipe(config=filled_env, sets=["MAX_MODEL_LEN=1500000"]).recipe)
    assert plan.head.env["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] == "1"


def test_secrets_never_reach_argv_env_or_rendered_files(tmp_path: Path, filled_env: Path) -> None:
    secret_key, secret_token = "sk-planted-api-key-31337", "hf_plantedtoken31337"
    recipe = resolve_recipe(config=filled_env, sets=[f"VLLM_API_KEY={secret_key}", f"HF_TOKEN={secret_token}"]).recipe
    plan = render_plan(recipe)
    assert plan.head.secret_env == ["VLLM_API_KEY", "HF_TOKEN"]
    written = write_plan_files(plan, tmp_path / "out")
    blobs = [plan.model_dump_json(), json.dumps(recipe.public_dict())] + [p.read_text() for p in written]
    for blob in blobs:
        assert secret_key not in blob and secret_token not in blob
    compose = (tmp_path / "out" / "rank0-head" / "compose.yaml").read_text()
    assert "secrets.env" in compose


def test_render_files_are_written_per_node(tmp_path: Path, filled_env: Path) -> None:
    plan = render_plan(resolve_recipe(config=filled_env).recipe)
    written = write_plan_files(plan, tmp_path / "out")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == [
        "plan.json",
        "rank0-head/command.sh",
        "rank0-head/compose.yaml",
        "rank1-worker1/command.sh",
        "rank1-worker1/compose.yaml",
    ]
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["nodes"][1]["headless"] is True
