"""Replica groups and the router: the fleet's rules, its rendered plan, and hostile values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashspark.errors import RecipeInvalid
from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import Recipe
from flashspark.render.fleet import render_fleet, write_fleet_files

KEY = "sk-fleet-unit-planted-77aa"
NODES = "".join(
    f'[[nodes]]\nname = "spark{i}"\nssh = "root@10.9.0.1{i}"\nvllm_host_ip = "10.9.0.1{i}"\n'
    'nccl_ib_hca = "rocep1s0f1"\nsocket_ifname = "enp1s0f1np1"\n'
    for i in range(1, 5)
)
TP2 = '[[replicas]]\nname = "a"\nnodes = ["spark1", "spark2"]\n[[replicas]]\nname = "b"\nnodes = ["spark3", "spark4"]\n'


def fleet(tmp_path: Path, *, replicas: str = TP2, router: str = "", api: str = "", strict: bool = True) -> Recipe:
    path = tmp_path / "fleet.toml"
    path.write_text(
        'profile = "agent-1m"\n[parallel]\ntensor_parallel_size = 2\n'
        f'[api]\nexpose = true\napi_key = "{KEY}"\n{api}[cluster]\nname = "pair"\n'
        f'hf_token = "hf_fleetPlantedToken0123456789abcd"\n[router]\n{router}' + NODES + replicas
    )
    return resolve_recipe(config=path, strict=strict).recipe


def errors_of(tmp_path: Path, **kwargs: str) -> list[str]:
    with pytest.raises(RecipeInvalid) as raised:
        fleet(tmp_path, **kwargs)
    return [f"{p.key}: {p.rule}" for p in raised.value.problems if p.severity == "error"]


def test_two_tp2_replicas_render_their_own_plans_and_the_router_in_front(tmp_path: Path) -> None:
    plan = render_fleet(fleet(tmp_path))
    assert [(r.name, r.deployment, r.worker_url) for r in plan.replicas] == [
        ("a", "pair-a", "http://10.9.0.11:8888"),
        ("b", "pair-b", "http://10.9.0.13:8888"),
    ]
    b = plan.replicas[1].plan
    assert [n.name for n in b.nodes] == ["spark3", "spark4"] and b.nodes[1].headless
    argv = b.nodes[0].argv
    # each replica rendezvous at its own head, and binds its API there for the router to reach
    assert argv[argv.index("--master-addr") + 1] == "10.9.0.13" and argv[argv.index("--host") + 1] == "10.9.0.13"
    assert argv[argv.index("--nnodes") + 1] == "2"
    router = plan.router.argv
    assert router[: router.index("--policy")][-2:] == ["http://10.9.0.11:8888", "http://10.9.0.13:8888"]
    assert router[router.index("--policy") + 1] == "cache_aware" and router[router.index("--host") + 1] == "127.0.0.1"
    assert plan.router.name == "spark1" and plan.router_url == "http://127.0.0.1:8800/v1"


def test_the_written_fleet_holds_every_plan_and_no_secret(tmp_path: Path) -> None:
    written = write_fleet_files(render_fleet(fleet(tmp_path)), tmp_path / "out")
    names = {str(p.relative_to(tmp_path / "out")) for p in written}
    assert {"fleet.json", "replica-a/plan.json", "replica-b/rank1-spark4/command.sh", "router/command.sh"} <= names
    for path in written:
        text = path.read_text()
        assert KEY not in text and "hf_fleetPlanted" not in text, path
    assert json.loads((tmp_path / "out" / "fleet.json").read_text())["replicas"][1]["plan"]["deployment"] == "pair-b"


def test_every_node_in_exactly_one_known_replica(tmp_path: Path) -> None:
    one_short = '[[replicas]]\nname = "a"\nnodes = ["spark1", "spark2"]\n[[replicas]]\nname = "b"\nnodes = ["spark3"]\n'
    assert errors_of(tmp_path, replicas=one_short) == ["replicas: node spark4 is in no replica"]
    twice = TP2.replace('["spark3", "spark4"]', '["spark2", "spark3", "spark4"]')
    assert errors_of(tmp_path, replicas=twice) == ["replicas: node spark2 is in 2 replicas"]
    unknown = TP2.replace('"spark4"]', '"spark9"]')
    assert "replicas.1.nodes: no [[nodes]] entry has this name" in errors_of(tmp_path, replicas=unknown)


def test_each_replica_is_checked_as_a_deployment(tmp_path: Path) -> None:
    # TP 2 over a one-node replica: the replica's own rule, named with the replica.
    lopsided = TP2.replace('["spark1", "spark2"]', '["spark1", "spark2", "spark3"]').replace(
        '["spark3", "spark4"]', '["spark4"]'
    )
    found = errors_of(tmp_path, replicas=lopsided)
    assert any(e.startswith("TENSOR_PARALLEL_SIZE: replica a: TP 2") for e in found), found
    assert any(e.startswith("TENSOR_PARALLEL_SIZE: replica b: TP 2") for e in found), found


@pytest.mark.parametrize("name", ["a;rm -rf ~", "$(id)", "../b", "a b", "-rf"])
def test_a_hostile_replica_name_is_refused(tmp_path: Path, name: str) -> None:
    replicas = TP2.replace('name = "a"', f"name = {json.dumps(name)}")
    assert errors_of(tmp_path, replicas=replicas) == ["replicas.0.name: not a safe replica name"]


def test_the_router_leaves_loopback_only_deliberately_and_never_without_a_key(tmp_path: Path) -> None:
    assert errors_of(tmp_path, router='host = "10.9.0.11"\n') == [
        "router.host: binds the router to a non-loopback address without router.expose"
    ]
    exposed = fleet(tmp_path, router='host = "10.9.0.11"\nexpose = true\n')
    assert render_fleet(exposed).router_url == "http://10.9.0.11:8800/v1"
    # without a key anywhere, the exposed router and each exposed replica are refused
    path = tmp_path / "nokey.toml"
    text = (tmp_path / "fleet.toml").read_text().replace(f'api_key = "{KEY}"\n', "")
    path.write_text(text)
    with pytest.raises(RecipeInvalid) as raised:
        resolve_recipe(config=path)
    keys = {(p.key, p.rule.split(":")[0]) for p in raised.value.problems if p.severity == "error"}
    assert ("VLLM_API_KEY", "the router is exposed on 10.9.0.11 and the replicas have no API key") in keys
    assert ("VLLM_API_KEY", "replica a") in keys


def test_a_plain_deployment_has_no_fleet(tmp_path: Path) -> None:
    recipe = fleet(tmp_path, replicas="", strict=False)
    assert recipe.replicas == []


def test_the_fabric_check_runs_in_the_image_with_the_nodes_nccl_variables_and_no_secret(tmp_path: Path) -> None:
    from flashspark.cluster.fabric import backend_of, rank_argv
    from flashspark.recipe.replicas import replicas_of

    replica = replicas_of(fleet(tmp_path))[1].recipe
    argv = rank_argv(replica, 1, port=25001, sizes=(8192,), timeout_s=30)
    assert backend_of(replica) == "nccl" and argv[:3] == ["docker", "run", "--rm"]
    assert {"--gpus", "all", "/dev/infiniband:/dev/infiniband", "memlock=-1"} <= set(argv)
    assert "NCCL_SOCKET_IFNAME=enp1s0f1np1" in argv and "NCCL_IB_HCA=rocep1s0f1" in argv
    assert "VLLM_HOST_IP=10.9.0.14" in argv
    image = argv.index(replica.cluster.image)
    # the rank's arguments: the replica's own head as rendezvous, rank 1 of 2, NCCL
    assert argv[image + 1 :] == ["-", "10.9.0.13", "25001", "1", "2", "nccl", "30", "8192"]
    assert not any(KEY in a or "hf_fleetPlanted" in a for a in argv)


def test_the_fabric_check_gets_the_gid_index_preflight_resolved_as_the_engine_will(tmp_path: Path) -> None:
    from flashspark.cluster.fabric import rank_argv
    from flashspark.recipe.replicas import replicas_of

    path = tmp_path / "auto.toml"
    path.write_text(
        'profile = "agent-1m"\n[parallel]\ntensor_parallel_size = 2\n'
        f'[api]\nexpose = true\napi_key = "{KEY}"\n[cluster]\nname = "pair"\n[router]\n'
        + NODES.replace('socket_ifname = "enp1s0f1np1"\n', 'socket_ifname = "enp1s0f1np1"\ngid_index = "auto"\n')
        + TP2
    )
    replica = replicas_of(resolve_recipe(config=path).recipe)[1].recipe

    def gid_of(gids: dict[str, str] | None) -> list[str]:
        argv = rank_argv(replica, 1, port=25001, sizes=(8192,), timeout_s=30, gids=gids)
        return [a for a in argv if a.startswith("NCCL_IB_GID_INDEX=")]

    assert gid_of({"spark3": "1", "spark4": "3"}) == ["NCCL_IB_GID_INDEX=3"]  # rank 1 is spark4
    assert gid_of(None) == [] and gid_of({"spark3": "1"}) == []  # unresolved: NCCL's own choice
