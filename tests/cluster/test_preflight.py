"""Preflight on real namespaced nodes: everything named per node, nothing started (marker: cluster)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import NetnsCluster
from tests.conftest import ENGINE_DIR, MODELS_DIR

pytestmark = pytest.mark.cluster
FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def cluster_toml(
    cluster: NetnsCluster,
    path: Path,
    *,
    worker_ip: str | None = None,
    worker_host: str | None = None,
    vllm_bin: str | None = None,
    api_port: int = 8000,
) -> Path:
    head, worker = cluster.nodes
    nodes = []
    for node, ip, host in (
        (head, head.address, head.address),
        (worker, worker_ip or worker.address, worker_host or worker.address),
    ):
        nodes.append(
            f'[[nodes]]\nname = "{node.name}"\nssh = "root@{host}"\nssh_identity = "{cluster.client_key}"\n'
            f'ssh_options = ["UserKnownHostsFile={cluster.known_hosts}", "ConnectTimeout=3"]\n'
            f'vllm_host_ip = "{ip}"\nsocket_ifname = "eth0"\n'
        )
    path.write_text(
        'profile = "local-cpu"\n[model]\nid = "local:tiny-random-llama"\nserved_name = "tiny"\n'
        f"[parallel]\ntensor_parallel_size = 2\n[api]\nport = {api_port}\n"
        f'[cluster]\nname = "netns"\nmaster_addr = "{head.address}"\nmaster_port = 29501\n'
        f'vllm_bin = "{vllm_bin or ENGINE_DIR + "/bin/flashspark-vllm"}"\n' + "\n".join(nodes)
    )
    return path


def preflight(path: Path) -> tuple[int, dict]:
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(path.parent),
        "FLASHSPARK_MODELS_DIR": MODELS_DIR,
        "FLASHSPARK_HOME": str(path.parent / "home"),
    }
    result = subprocess.run(
        [FLASHSPARK, "preflight", "--env", str(path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def failed(report: dict) -> list[tuple[str, str]]:
    return [(c["node"], c["check"]) for c in report["checks"] if not c["ok"]]


@pytest.fixture(scope="module", autouse=True)
def vllm_wrapper() -> None:
    from flashspark.engine.install import ensure_vllm_wrapper, require_engine

    ensure_vllm_wrapper(require_engine(Path(ENGINE_DIR)))


def test_ready_nodes_pass_every_check(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    code, report = preflight(cluster_toml(netns_cluster, tmp_path / "c.toml"))
    assert code == 0 and report["ok"], failed(report)
    checks = {(c["node"], c["check"]) for c in report["checks"]}
    assert ("node1", "port 8000 free") in checks and ("node1", "port 29501 free") in checks
    assert ("node2", "VLLM_HOST_IP is local") in checks and ("node2", "model") in checks
    assert {c["detail"] for c in report["checks"] if c["check"] == "reachable"} == {"node1", "node2"}


def test_a_foreign_vllm_host_ip_is_named(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    code, report = preflight(cluster_toml(netns_cluster, tmp_path / "c.toml", worker_ip=f"{netns_cluster.subnet}.77"))
    assert code == 5 and failed(report) == [("node2", "VLLM_HOST_IP is local")]
    assert "not an address of node2" in next(c["fix"] for c in report["checks"] if not c["ok"])


def test_an_unreachable_worker_is_named_and_the_head_still_checked(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    toml = cluster_toml(
        netns_cluster,
        tmp_path / "c.toml",
        worker_host=f"{netns_cluster.subnet}.99",
        worker_ip=f"{netns_cluster.subnet}.99",
    )
    code, report = preflight(toml)
    assert code == 5 and failed(report) == [("node2", "reachable")]
    assert [c["check"] for c in report["checks"] if c["node"] == "node2"] == ["reachable"]
    assert any(c["node"] == "node1" and c["check"] == "runtime" and c["ok"] for c in report["checks"])


@contextlib.contextmanager
def squatted_port(namespace: str) -> Iterator[int]:
    """A port something else listens on inside a node, for as long as the block runs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    code = (
        f"import socket,time; s=socket.socket(); s.bind(('0.0.0.0', {port})); s.listen();"
        " print('up', flush=True); time.sleep(60)"
    )
    squatter = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert squatter.stdout is not None
    try:
        assert squatter.stdout.readline().strip() == "up"
        yield port
    finally:
        squatter.kill()
        squatter.wait()
        squatter.stdout.close()


def test_a_busy_api_port_on_the_head_is_named(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    with squatted_port(netns_cluster.nodes[0].namespace) as port:
        code, report = preflight(cluster_toml(netns_cluster, tmp_path / "c.toml", api_port=port))
    assert code == 5 and failed(report) == [("node1", f"port {port} free")]


def test_a_missing_runtime_fails_on_every_node(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    code, report = preflight(cluster_toml(netns_cluster, tmp_path / "c.toml", vllm_bin="/opt/nowhere/vllm"))
    assert code == 5 and failed(report) == [("node1", "runtime"), ("node2", "runtime")]


@pytest.mark.parametrize("fault", ["worker unreachable", "api port busy"])
def test_up_refused_by_preflight_starts_nothing_anywhere(
    netns_cluster: NetnsCluster, tmp_path: Path, fault: str
) -> None:
    env = {**os.environ, "FLASHSPARK_MODELS_DIR": MODELS_DIR, "FLASHSPARK_HOME": str(tmp_path / "home")}

    def up(toml: Path) -> subprocess.CompletedProcess[str]:
        argv = [FLASHSPARK, "up", "--env", str(toml)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)

    if fault == "worker unreachable":
        result = up(cluster_toml(netns_cluster, tmp_path / "c.toml", worker_host=f"{netns_cluster.subnet}.99"))
    else:
        with squatted_port(netns_cluster.nodes[0].namespace) as port:
            result = up(cluster_toml(netns_cluster, tmp_path / "c.toml", api_port=port))
    print(f"up with {fault}: exit {result.returncode}\n{result.stderr.strip()}")
    assert result.returncode == 5 and "preflight failed" in result.stderr and "nothing was started" in result.stderr
    assert not (tmp_path / "home" / "state" / "netns.json").exists()
    assert not list((tmp_path / "home").glob("runs/*"))  # not even a run directory
