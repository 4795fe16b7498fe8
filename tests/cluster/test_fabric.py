"""The fabric check for real: gloo all-reduce from the engine's torch between two namespaced nodes over
their veth links, and the ways it fails (markers: cluster, engine)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cluster.conftest import NetnsCluster
from tests.cluster.test_two_node_vllm import FLASHSPARK, free_port
from tests.conftest import ENGINE_DIR

pytestmark = [pytest.mark.cluster, pytest.mark.engine]


@pytest.fixture(scope="module", autouse=True)
def vllm_wrapper() -> None:
    from flashspark.engine.install import ensure_vllm_wrapper, require_engine

    ensure_vllm_wrapper(require_engine(Path(ENGINE_DIR)))


def fabric_toml(cluster: NetnsCluster, path: Path, *, worker_ifname: str = "eth0") -> Path:
    head = cluster.nodes[0]
    nodes = cluster.nodes_toml().replace('socket_ifname = "eth0"\n', 'socket_ifname = "IFNAME"\n')
    # The head keeps eth0; the worker gets the interface under test.
    first, rest = nodes.split("[[nodes]]", 2)[1:]
    nodes = "[[nodes]]" + first.replace("IFNAME", "eth0") + "[[nodes]]" + rest.replace("IFNAME", worker_ifname)
    path.write_text(
        'profile = "local-cpu"\n[model]\nid = "local:tiny-random-llama"\n[parallel]\ntensor_parallel_size = 2\n'
        f'[cluster]\nname = "fabric"\nmaster_addr = "{head.address}"\nmaster_port = {free_port()}\n'
        f'vllm_bin = "{ENGINE_DIR}/bin/flashspark-vllm"\n[lifecycle]\nfabric_timeout_s = 8\n' + nodes
    )
    return path


def cli(toml: Path, home: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    env = {**os.environ, "FLASHSPARK_HOME": str(home)}
    done = subprocess.run(
        [FLASHSPARK, *args, "--json", "--env", str(toml)], capture_output=True, text=True, env=env, timeout=300
    )
    return done.returncode, json.loads(done.stdout)


def test_preflight_records_host_facts_and_measures_the_all_reduce(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    code, report = cli(fabric_toml(netns_cluster, tmp_path / "f.toml"), tmp_path / "home", "preflight")
    assert code == 0, report
    facts = {f["node"]: f for f in report["host_facts"]}
    assert list(facts) == ["node1", "node2"]
    assert {(f["kernel"], f["vllm"], f["interface"], f["operstate"], f["mtu"]) for f in facts.values()} == {
        (os.uname().release, "0.32.0", "eth0", "up", 1500)
    }
    [fabric] = report["fabric"]  # one TP group
    assert fabric["ok"] and fabric["backend"] == "gloo" and fabric["world_size"] == 2
    assert [s["bytes"] for s in fabric["sizes"]] == [8192, 65536, 1 << 20, 16 << 20]
    assert all(s["p50_us"] > 0 and s["bus_gbps"] > 0 for s in fabric["sizes"])
    assert {(r["node"], r["interface"], r["variable"]) for r in fabric["ranks"]} == {
        ("node1", "eth0", "GLOO_SOCKET_IFNAME"),
        ("node2", "eth0", "GLOO_SOCKET_IFNAME"),
    }
    print("fabric over veth:", [(s["bytes"], s["p50_us"], s["bus_gbps"]) for s in fabric["sizes"]])


def test_a_wrong_interface_fails_naming_the_node_interface_and_variable(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    toml = fabric_toml(netns_cluster, tmp_path / "f.toml", worker_ifname="eth9")
    code, report = cli(toml, tmp_path / "home", "fabric")
    assert code == 5 and not report["ok"]
    first = report["problems"][0]
    assert (first["node"], first["interface"], first["variable"]) == ("node2", "eth9", "GLOO_SOCKET_IFNAME")
    assert "does not exist" in first["message"] and "Unable to find address for: eth9" in first["message"]
    # preflight names it before any all-reduce runs
    code, checked = cli(toml, tmp_path / "home", "preflight", "--no-fabric")
    assert code == 5 and checked["fabric"] == []
    [bad] = [c for c in checked["checks"] if not c["ok"]]
    assert (bad["node"], bad["check"]) == ("node2", "fabric interface") and "eth9" in bad["detail"]


def test_a_rank_that_cannot_reach_the_master_fails_naming_it(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    head, worker = netns_cluster.nodes
    # node2 still answers ssh (from the bridge's address) but cannot reach node1: a route that drops it.
    route = ["ip", "netns", "exec", worker.namespace, "ip", "route"]
    subprocess.run([*route, "add", "blackhole", f"{head.address}/32"], check=True)
    try:
        code, report = cli(fabric_toml(netns_cluster, tmp_path / "f.toml"), tmp_path / "home", "fabric")
    finally:
        subprocess.run([*route, "del", "blackhole", f"{head.address}/32"], check=True)
    assert code == 5 and not report["ok"]
    first = report["problems"][0]
    assert first["node"] == "node2" and "did not meet" in first["message"] and report["master"] in first["message"]
    assert {p["node"] for p in report["problems"]} == {"node1", "node2"}  # rank 0 waited for it in vain


def test_a_node_matching_a_known_bad_entry_fails_preflight(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        f'[[entry]]\nid = "lab-kernel"\nwhen = {{ kernel = "{os.uname().release}" }}\n'
        'effect = "the lab saw RDMA stalls"\nfix = "boot the lab kernel"\nsource = "lab wiki, page 12"\n'
    )
    toml = fabric_toml(netns_cluster, tmp_path / "f.toml")
    code, report = cli(toml, tmp_path / "home", "preflight", "--known-bad", str(site))
    assert code == 5 and report["fabric"] == []  # no all-reduce once a node check failed
    bad = [(c["node"], c["check"]) for c in report["checks"] if not c["ok"]]
    assert bad == [("node1", "known-bad: lab-kernel"), ("node2", "known-bad: lab-kernel")]
    assert all("lab wiki, page 12" in c["detail"] for c in report["checks"] if not c["ok"])
