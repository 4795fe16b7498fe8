"""Precedence: built-in default < profile < config file < --set, one test per step."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashspark.errors import RecipeError, RecipeInvalid
from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import ApiSettings, ClusterSettings

TWO_NODES = """\
VLLM_HOST_IP=10.0.0.1
WORKER_HOST=spark@10.0.0.2
WORKER_VLLM_HOST_IP=10.0.0.2
MASTER_ADDR=10.0.0.1
NCCL_IB_HCA=rocep1s0f0
NCCL_SOCKET_IFNAME=enp1s0f0np0
NCCL_IB_GID_INDEX=3
HF_CACHE=/data/hf
"""


@pytest.fixture
def cluster_env(tmp_path: Path) -> Path:
    path = tmp_path / ".env.dspark"
    path.write_text(TWO_NODES)
    return path


def test_builtin_default_applies_when_nothing_sets_the_key(cluster_env: Path) -> None:
    recipe = resolve_recipe(config=cluster_env).recipe
    assert recipe.cluster.master_port == ClusterSettings().master_port
    assert recipe.api.port == ApiSettings().port


def test_profile_overrides_builtin_default(cluster_env: Path) -> None:
    recipe = resolve_recipe(config=cluster_env, profile="throughput-200k").recipe
    assert recipe.engine.max_num_seqs == 16
    assert recipe.engine.max_model_len == 200_000


def test_file_overrides_profile(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "MAX_NUM_SEQS=4\n")
    resolved = resolve_recipe(config=cluster_env)
    assert resolved.recipe.engine.max_num_seqs == 4
    assert resolved.origin_of("engine.max_num_seqs") == f"{cluster_env}:9"


def test_set_overrides_file(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "MAX_NUM_SEQS=4\n")
    resolved = resolve_recipe(config=cluster_env, sets=["MAX_NUM_SEQS=2"])
    assert resolved.recipe.engine.max_num_seqs == 2
    assert resolved.origin_of("engine.max_num_seqs") == "--set"


def test_set_accepts_dotted_paths(cluster_env: Path) -> None:
    recipe = resolve_recipe(config=cluster_env, sets=["engine.max_num_batched_tokens=4096"]).recipe
    assert recipe.engine.max_num_batched_tokens == 4096


def test_env_group_override_from_file(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "VLLM_USE_B12X_WO_PROJECTION=0\n")
    recipe = resolve_recipe(config=cluster_env).recipe
    assert recipe.env["b12x"]["VLLM_USE_B12X_WO_PROJECTION"] == "0"


def test_extended_profile_keeps_parent_env_groups_and_adds_decisions() -> None:
    recipe = resolve_recipe(profile="single-stream", strict=False).recipe
    assert recipe.env["b12x"]["VLLM_USE_B12X_MOE"] == "1"
    assert recipe.env["b12x"]["VLLM_USE_B12X_WO_PROJECTION"] == "0"
    assert any("repetition_penalty" in d for d in recipe.profile.decisions)
    assert any("1 x (5 + 1)" in d for d in recipe.profile.decisions)


def test_worker_inherits_shared_node_keys_unless_overridden(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "WORKER_NCCL_IB_HCA=rocep2s0f0\n")
    head, worker = resolve_recipe(config=cluster_env).recipe.nodes
    assert worker.hf_cache == head.hf_cache == "/data/hf"
    assert worker.gid_index == 3
    assert head.nccl_ib_hca == "rocep1s0f0"
    assert worker.nccl_ib_hca == "rocep2s0f0"


def test_worker_script_dir_wins_over_worker_dir(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "WORKER_SCRIPT_DIR=/a\nWORKER_DIR=/b\n")
    assert resolve_recipe(config=cluster_env).recipe.nodes[1].checkout_dir == "/a"


def test_shared_node_key_in_set_reaches_every_node(cluster_env: Path) -> None:
    nodes = resolve_recipe(config=cluster_env, sets=["NCCL_IB_GID_INDEX=auto"]).recipe.nodes
    assert [n.gid_index for n in nodes] == ["auto", "auto"]


def test_profile_named_in_file_is_used_and_cli_profile_wins(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "PROFILE=deep-1m\n")
    assert resolve_recipe(config=cluster_env).recipe.profile.name == "deep-1m"
    assert resolve_recipe(config=cluster_env, profile="balanced-500k").recipe.profile.name == "balanced-500k"


def test_toml_file_layers_like_the_env_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(
        'profile = "deep-1m"\n[cluster]\nmaster_addr = "10.0.0.1"\n[engine]\nmax_num_seqs = 1\n'
        '[[nodes]]\nname = "a"\nvllm_host_ip = "10.0.0.1"\nnccl_ib_hca = "r0"\nsocket_ifname = "e0"\n'
        '[[nodes]]\nname = "b"\nssh = "u@10.0.0.2"\nvllm_host_ip = "10.0.0.2"\nnccl_ib_hca = "r0"\n'
        'socket_ifname = "e0"\n'
    )
    resolved = resolve_recipe(config=path, sets=["nodes.1.nccl_ib_hca=r1"])
    assert resolved.recipe.profile.name == "deep-1m"
    assert resolved.recipe.engine.max_num_seqs == 1
    assert [n.nccl_ib_hca for n in resolved.recipe.nodes] == ["r0", "r1"]


def test_unknown_env_key_warns_with_a_suggestion(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "MAX_NUM_SEQ=4\n")
    resolved = resolve_recipe(config=cluster_env)
    warning = next(p for p in resolved.warnings if p.key == "MAX_NUM_SEQ")
    assert "MAX_NUM_SEQS" in warning.fix
    assert warning.where == f"{cluster_env}:9"


def test_unknown_toml_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[engine]\nmax_num_seqz = 3\n")
    with pytest.raises(RecipeInvalid) as caught:
        resolve_recipe(config=path, profile="local-cpu")
    assert caught.value.problems[-1].key == "engine.max_num_seqz"


def test_bad_type_names_the_flat_key_and_line(cluster_env: Path) -> None:
    cluster_env.write_text(TWO_NODES + "MAX_NUM_SEQS=six\n")
    with pytest.raises(RecipeInvalid) as caught:
        resolve_recipe(config=cluster_env)
    problem = next(p for p in caught.value.problems if p.severity == "error")
    assert (problem.key, problem.value, problem.where) == ("MAX_NUM_SEQS", "six", f"{cluster_env}:9")
    assert "whole number" in problem.fix


def test_malformed_set_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        resolve_recipe(profile="local-cpu", sets=["MAX_NUM_SEQS"])


def test_unknown_profile_suggests_the_close_one() -> None:
    with pytest.raises(RecipeError) as caught:
        resolve_recipe(profile="agent-1n")
    assert "agent-1m" in (caught.value.fix or "")


def test_local_model_resolves_under_flashspark_home(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flashspark.render import resolve_model_path

    monkeypatch.delenv("FLASHSPARK_MODELS_DIR")
    recipe = resolve_recipe(profile="local-cpu").recipe
    assert resolve_model_path(recipe) == f"{isolated}/flashspark-home/models/smollm2-135m-instruct"
    monkeypatch.setenv("FLASHSPARK_MODELS_DIR", "/srv/models")
    assert resolve_model_path(resolve_recipe(profile="local-cpu").recipe) == "/srv/models/smollm2-135m-instruct"
