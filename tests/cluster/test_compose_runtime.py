"""The compose runtime on nodes with real Docker engines (marker: cluster).

Each namespaced node runs its own dockerd; the image is built locally (a busybox
rootfs with a stand-in `vllm`) and is byte-identical on both nodes. What is under
test is the lifecycle: compose files and owner-only secrets synced per node,
workers first, labels, status, and a down that verifies nothing is left.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import STUB_IMAGE, NetnsCluster

pytestmark = pytest.mark.cluster
FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
API_KEY = "sk-planted-compose-7f3a9c1e"
HF_TOKEN = "hf_plantedComposeToken0123456789abcd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def compose_toml(cluster: NetnsCluster, path: Path, *, name: str = "ctest", image: str = STUB_IMAGE) -> Path:
    head = cluster.nodes[0]
    nodes = cluster.nodes_toml(lambda rank, node: f'checkout_dir = "{path.parent}/deploy"\n')
    path.write_text(
        'profile = "local-cpu"\n[model]\nid = "stub/model"\nserved_name = "stub-tp2"\n'
        '[speculative]\nmethod = "none"\n[engine]\nmax_model_len = 2048\n'
        f'[parallel]\ntensor_parallel_size = 2\n[api]\nhost = "{head.address}"\nport = {free_port()}\n'
        f'expose = true\napi_key = "{API_KEY}"\n'
        f'[cluster]\nname = "{name}"\nruntime = "compose"\nimage = "{image}"\nvllm_bin = "vllm"\n'
        f'master_addr = "{head.address}"\nmaster_port = {free_port()}\nhf_token = "{HF_TOKEN}"\n'
        # The stub image has no Python or torch: the fabric check has its own tests (test_fabric.py).
        "[lifecycle]\nport_timeout_s = 60\nrendezvous_timeout_s = 60\nstop_timeout_s = 5\nfabric_check = false\n"
        + nodes
    )
    return path


def docker(node_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": f"unix://{node_dir}/docker.sock"}
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, check=False)


def cli(toml: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLASHSPARK_HOME": str(home)}
    return subprocess.run(
        [FLASHSPARK, *args, "--env", str(toml)], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_compose_up_labels_status_capture_and_verified_down(docker_nodes: NetnsCluster, tmp_path: Path) -> None:
    toml = compose_toml(docker_nodes, tmp_path / "c.toml")
    home = tmp_path / "home"
    up = cli(toml, home, "up", "--json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        state = json.loads(up.stdout)
        assert [n["node"] for n in state["nodes"]] == ["node1", "node2"] and all(n["container"] for n in state["nodes"])

        # Each engine is a container on its own node, labelled with deployment, node and rank.
        for rank, node in enumerate(docker_nodes.nodes):
            listed = docker(
                node.docker_dir, "ps", "--filter", "label=io.flashspark.deployment=ctest", "--format", "json"
            )
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            assert len(rows) == 1, listed.stdout + listed.stderr
            labels = dict(item.split("=", 1) for item in rows[0]["Labels"].split(","))
            assert labels["io.flashspark.node"] == node.name and labels["io.flashspark.rank"] == str(rank)
            assert labels["io.flashspark.role"] == ("head" if rank == 0 else "worker")
            assert labels["com.docker.compose.project"] == "ctest"
        # The pin set: the image each node runs, recorded at boot and in every capture.
        stub_id = docker(
            docker_nodes.nodes[0].docker_dir, "image", "inspect", "-f", "{{.Id}}", STUB_IMAGE
        ).stdout.strip()
        boot = json.loads((Path(state["run_dir"]) / "boot.json").read_text())
        assert boot["pins"]["image_id"] == stub_id and set(boot["pins"]["image_per_node"]) == {"node1", "node2"}
        deploy = tmp_path / "deploy"
        assert oct((deploy / "node2" / "secrets.env").stat().st_mode & 0o777) == "0o600"
        assert API_KEY not in (deploy / "node1" / "compose.yaml").read_text()

        status = cli(toml, home, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert [n["state"] for n in report["nodes"]] == ["running", "running"]
        assert report["same_image_everywhere"] is True
        assert report["api"]["models"] == [{"id": "stub-tp2", "max_model_len": 2048}]

        again = cli(toml, home, "up")
        assert again.returncode == 3 and "already running" in again.stderr

        captured = cli(toml, home, "capture", str(tmp_path / "cap"), "--json")
        assert captured.returncode == 0, captured.stderr
        files = json.loads(captured.stdout)["files"]
        assert json.loads(captured.stdout)["pins"]["image_id"] == stub_id
        assert {"node1/inspect.json", "node2/inspect.json", "node1/log.tail", "api/api.json"} <= set(files)
        # docker inspect shows the container's environment: the env_file's secrets are in it.
        inspect_text = (tmp_path / "cap" / "node1" / "inspect.json").read_text()
        assert "VLLM_API_KEY=***" in inspect_text and "HF_TOKEN=***" in inspect_text
    finally:
        down = cli(toml, home, "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert json.loads(down.stdout)["stopped"] == ["node1", "node2"]
    for node in docker_nodes.nodes:
        left = docker(node.docker_dir, "ps", "-a", "-q", "--filter", "label=io.flashspark.deployment=ctest")
        assert left.returncode == 0 and left.stdout.strip() == ""
    for root in (tmp_path / "cap", home):
        for path in root.rglob("*"):
            if path.is_file():
                text = path.read_text(errors="replace")
                assert API_KEY not in text and HF_TOKEN not in text, path


def test_down_finds_containers_by_label_without_a_state_file(docker_nodes: NetnsCluster, tmp_path: Path) -> None:
    # A deployment started from another machine (or whose state was lost) is still found and removed.
    toml = compose_toml(docker_nodes, tmp_path / "c.toml", name="orphan")
    worker = docker_nodes.nodes[1]
    started = docker(
        worker.docker_dir,
        "run",
        "-d",
        "--label",
        "io.flashspark.deployment=orphan",
        STUB_IMAGE,
        "sleep",
        "600",
    )
    assert started.returncode == 0, started.stderr
    down = cli(toml, tmp_path / "home", "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    left = docker(worker.docker_dir, "ps", "-a", "-q", "--filter", "label=io.flashspark.deployment=orphan")
    assert left.stdout.strip() == ""


def test_preflight_refuses_nodes_with_different_images(docker_nodes: NetnsCluster, tmp_path: Path) -> None:
    worker = docker_nodes.nodes[1]
    # Same tag, different content on the worker: the mismatch the recipe's users hit after a partial rebuild.
    built = subprocess.run(
        [
            "sh",
            "-c",
            'printf "FROM %s\\nLABEL rebuilt=yes\\n" "$1" | docker build -q -t "$2" -',
            "x",
            STUB_IMAGE,
            "flashspark-test/vllm-stub:drift",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": f"unix://{worker.docker_dir}/docker.sock", "DOCKER_BUILDKIT": "0"},
        check=False,
    )
    assert built.returncode == 0, built.stderr
    head = docker_nodes.nodes[0]
    assert docker(head.docker_dir, "tag", STUB_IMAGE, "flashspark-test/vllm-stub:drift").returncode == 0
    toml = compose_toml(docker_nodes, tmp_path / "c.toml", name="drift", image="flashspark-test/vllm-stub:drift")
    up = cli(toml, tmp_path / "home", "up", "--json")
    assert up.returncode == 5, up.stdout + up.stderr
    assert "same image" in up.stdout
    for node in docker_nodes.nodes:
        assert (
            docker(node.docker_dir, "ps", "-a", "-q", "--filter", "label=io.flashspark.deployment=drift").stdout == ""
        )
