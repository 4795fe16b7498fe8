"""Every validation rule: one case that makes it fire and one that passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashspark.errors import Problem
from flashspark.recipe import resolve_recipe

VALID = {
    "VLLM_HOST_IP": "10.0.0.1",
    "WORKER_HOST": "spark@10.0.0.2",
    "WORKER_VLLM_HOST_IP": "10.0.0.2",
    "MASTER_ADDR": "10.0.0.1",
    "NCCL_IB_HCA": "rocep1s0f0",
    "NCCL_SOCKET_IFNAME": "enp1s0f0np0",
    "NCCL_IB_GID_INDEX": "3",
}


def problems(
    tmp_path: Path,
    changes: dict[str, str | None] | None = None,
    *,
    profile: str | None = None,
    sets: list[str] | None = None,
) -> list[Problem]:
    values: dict[str, str | None] = {**VALID, **(changes or {})}
    path = tmp_path / "cluster.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v is not None))
    return resolve_recipe(config=path, profile=profile, sets=sets or [], strict=False).problems


def errors_for(found: list[Problem], key: str) -> list[Problem]:
    return [p for p in found if p.key == key and p.severity == "error"]


def test_valid_two_node_recipe_has_no_errors(tmp_path: Path) -> None:
    assert [p for p in problems(tmp_path) if p.severity == "error"] == []


@pytest.mark.parametrize(
    "key", ["MASTER_ADDR", "WORKER_VLLM_HOST_IP", "VLLM_HOST_IP", "NCCL_IB_HCA", "NCCL_SOCKET_IFNAME"]
)
def test_required_key_missing_fires(tmp_path: Path, key: str) -> None:
    found = errors_for(problems(tmp_path, {key: None}), key)
    assert found and "required" in found[0].rule


def test_no_nodes_at_all_fires(tmp_path: Path) -> None:
    path = tmp_path / "empty.env"
    path.write_text("MAX_NUM_SEQS=6\n")
    found = resolve_recipe(config=path, strict=False).problems
    assert any(p.key == "WORKER_HOST" and "no nodes" in p.rule for p in found)


@pytest.mark.parametrize(
    ("key", "placeholder"),
    [
        ("NCCL_IB_HCA", "rocepXsYfZ"),
        ("NCCL_SOCKET_IFNAME", "enpXsYfZnpN"),
        ("MASTER_ADDR", "head-roce-ip"),
        ("WORKER_HOST", "worker-host-or-roce-ip"),
    ],
)
def test_template_placeholder_fires(tmp_path: Path, key: str, placeholder: str) -> None:
    found = errors_for(problems(tmp_path, {key: placeholder}), key)
    assert found and "placeholder" in found[0].rule


def test_invalid_ip_fires(tmp_path: Path) -> None:
    found = errors_for(problems(tmp_path, {"WORKER_VLLM_HOST_IP": "10.0.0.300"}), "WORKER_VLLM_HOST_IP")
    assert found and "not an IP" in found[0].rule


def test_shared_ip_between_nodes_fires(tmp_path: Path) -> None:
    found = errors_for(problems(tmp_path, {"WORKER_VLLM_HOST_IP": "10.0.0.1"}), "WORKER_VLLM_HOST_IP")
    assert found and "VLLM_HOST_IP" in found[0].rule


def test_master_addr_other_than_head_ip_warns(tmp_path: Path) -> None:
    found = problems(tmp_path, {"MASTER_ADDR": "10.0.0.9"})
    assert [p.severity for p in found if p.key == "MASTER_ADDR"] == ["warning"]


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"VLLM_PORT": "70000"}, "VLLM_PORT"),
        ({"MASTER_PORT": "0"}, "MASTER_PORT"),
        ({"MASTER_PORT": "8888"}, "MASTER_PORT"),
    ],
)
def test_port_rules_fire(tmp_path: Path, changes: dict[str, str], key: str) -> None:
    assert errors_for(problems(tmp_path, changes), key)


def test_distinct_in_range_ports_pass(tmp_path: Path) -> None:
    found = problems(tmp_path, {"VLLM_PORT": "9000", "MASTER_PORT": "29500"})
    assert not [p for p in found if p.key in {"VLLM_PORT", "MASTER_PORT"}]


def test_node_count_must_match_tp_times_pp(tmp_path: Path) -> None:
    found = errors_for(problems(tmp_path, sets=["TENSOR_PARALLEL_SIZE=4"]), "TENSOR_PARALLEL_SIZE")
    assert found and "2 node(s)" in found[0].rule


def test_four_nodes_pass_with_tp4(tmp_path: Path) -> None:
    extra = {
        "WORKER2_HOST": "s@10.0.0.3",
        "WORKER2_VLLM_HOST_IP": "10.0.0.3",
        "WORKER3_HOST": "s@10.0.0.4",
        "WORKER3_VLLM_HOST_IP": "10.0.0.4",
    }
    assert errors_for(problems(tmp_path, extra), "TENSOR_PARALLEL_SIZE")
    assert not [p for p in problems(tmp_path, extra, sets=["TENSOR_PARALLEL_SIZE=4"]) if p.severity == "error"]


@pytest.mark.parametrize(("k", "fires"), [(1, False), (5, False), (7, True), (10, False), (12, True), (0, True)])
def test_dspark_draft_length_rule(tmp_path: Path, k: int, fires: bool) -> None:
    found = errors_for(problems(tmp_path, {"MTP_NUM_TOKENS": str(k)}), "MTP_NUM_TOKENS")
    assert bool(found) is fires


def test_capture_size_must_be_seqs_times_k_plus_one(tmp_path: Path) -> None:
    assert errors_for(problems(tmp_path, {"MAX_CUDAGRAPH_CAPTURE_SIZE": "6"}), "MAX_CUDAGRAPH_CAPTURE_SIZE")
    assert not errors_for(problems(tmp_path, {"MAX_CUDAGRAPH_CAPTURE_SIZE": "36"}), "MAX_CUDAGRAPH_CAPTURE_SIZE")


def test_max_model_len_above_native_needs_allow_long(tmp_path: Path) -> None:
    found = errors_for(problems(tmp_path, {"MAX_MODEL_LEN": "1500000"}), "MAX_MODEL_LEN")
    assert found and "native limit" in found[0].rule
    allowed = problems(tmp_path, {"MAX_MODEL_LEN": "1500000", "ALLOW_LONG_MAX_MODEL_LEN": "1"})
    assert not errors_for(allowed, "MAX_MODEL_LEN")


@pytest.mark.parametrize(("gmu", "fires"), [("0", True), ("1.2", True), ("-0.5", True), ("0.78", False), ("1", False)])
def test_gpu_memory_utilization_range(tmp_path: Path, gmu: str, fires: bool) -> None:
    found = errors_for(problems(tmp_path, {"GPU_MEMORY_UTILIZATION": gmu}), "GPU_MEMORY_UTILIZATION")
    assert bool(found) is fires


def test_non_loopback_api_needs_expose_and_a_key(tmp_path: Path) -> None:
    assert errors_for(problems(tmp_path, {"VLLM_HOST": "0.0.0.0"}), "VLLM_HOST")
    exposed = problems(tmp_path, {"VLLM_HOST": "0.0.0.0", "EXPOSE_API": "1"})
    assert not errors_for(exposed, "VLLM_HOST")
    assert [p.severity for p in exposed if p.key == "VLLM_API_KEY"] == ["error"]
    keyed = problems(tmp_path, {"VLLM_HOST": "0.0.0.0", "EXPOSE_API": "1", "VLLM_API_KEY": "s3cret"})
    assert not [p for p in keyed if p.key in {"VLLM_HOST", "VLLM_API_KEY"}]


def test_negative_gid_index_fires_and_auto_passes(tmp_path: Path) -> None:
    assert errors_for(problems(tmp_path, {"NCCL_IB_GID_INDEX": "-1"}), "NCCL_IB_GID_INDEX")
    assert not errors_for(problems(tmp_path, {"NCCL_IB_GID_INDEX": "auto"}), "NCCL_IB_GID_INDEX")


def test_duplicate_node_names_fire(tmp_path: Path) -> None:
    found = problems(tmp_path, {"HEAD_NAME": "spark", "WORKER_NAME": "spark"})
    assert errors_for(found, "nodes.name")


def test_local_cpu_profile_is_valid_on_its_own() -> None:
    resolved = resolve_recipe(profile="local-cpu")
    assert resolved.errors == []
