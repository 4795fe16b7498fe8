"""`model verify --all-nodes`: each node's own HF cache checked over SSH by the same probe (marker: cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flashspark.cluster.transport import ssh_argv
from tests.cluster.conftest import NetnsCluster
from tests.provenance.test_model_verify import COMMIT, MODEL, build_cache

pytestmark = pytest.mark.cluster
FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def caches_toml(cluster: NetnsCluster, tmp_path: Path, caches: list[Path]) -> Path:
    nodes = cluster.nodes_toml(lambda rank, node: f'hf_cache = "{caches[rank]}"\n')
    path = tmp_path / "models.toml"
    path.write_text(
        f'profile = "local-cpu"\n[model]\nid = "{MODEL}"\nrevision = "{COMMIT}"\n[parallel]\ntensor_parallel_size = 2\n'
        f'[cluster]\nname = "models"\nmaster_addr = "{cluster.nodes[0].address}"\n' + nodes
    )
    return path


def test_each_node_is_checked_in_its_own_cache(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    good, bad = build_cache(tmp_path / "node1-cache"), build_cache(tmp_path / "node2-cache")
    snapshot = bad / "hub" / f"models--{MODEL.replace('/', '--')}" / "snapshots" / COMMIT
    (snapshot / "model-00003-of-00003.safetensors").unlink()
    toml = caches_toml(netns_cluster, tmp_path, [good, bad])
    result = subprocess.run(
        [FLASHSPARK, "model", "verify", "--all-nodes", "--json", "--env", str(toml)],
        capture_output=True,
        text=True,
        env={**os.environ, "FLASHSPARK_HOME": str(tmp_path / "home")},
        timeout=120,
        check=False,
    )
    assert result.returncode == 4, result.stdout + result.stderr
    report = json.loads(result.stdout)
    node1, node2 = report["nodes"]
    assert node1["ok"] and node1["report"]["commit"] == COMMIT and len(node1["report"]["shards"]) == 3
    assert node2["problems"] == ["model-00003-of-00003.safetensors: missing (not in the snapshot)"]

    human = subprocess.run(
        [FLASHSPARK, "model", "verify", "--all-nodes", "--env", str(toml)],
        capture_output=True,
        text=True,
        env={**os.environ, "FLASHSPARK_HOME": str(tmp_path / "home")},
        timeout=120,
        check=False,
    )
    assert human.returncode == 4 and "node1: ok" in human.stdout and "node2: model-00003" in human.stdout


def prepare(toml: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLASHSPARK, "model", "prepare", "--json", "--env", str(toml)],
        capture_output=True,
        text=True,
        env={**os.environ, "FLASHSPARK_HOME": str(home)},
        timeout=300,
        check=False,
    )


def test_prepare_copies_the_heads_snapshot_only_where_it_is_missing(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    head_cache = build_cache(tmp_path / "node1-cache")
    worker_cache = tmp_path / "node2-cache"
    worker_cache.mkdir()
    toml = caches_toml(netns_cluster, tmp_path, [head_cache, worker_cache])
    first = prepare(toml, tmp_path / "home")
    assert first.returncode == 0, first.stdout + first.stderr
    actions = {row["node"]: row["action"] for row in json.loads(first.stdout)["nodes"]}
    assert actions["node1"] == "complete, not downloaded" and actions["node2"].startswith("copied")
    # the worker now holds the same blobs and snapshot links, checked by shard length and by sha256
    snapshot = worker_cache / "hub" / f"models--{MODEL.replace('/', '--')}" / "snapshots" / COMMIT
    assert all(p.is_symlink() for p in snapshot.glob("*.safetensors"))
    verified = subprocess.run(
        [
            FLASHSPARK,
            "model",
            "verify",
            "--hf-cache",
            str(worker_cache),
            "--model",
            MODEL,
            "--revision",
            COMMIT,
            "--sha256",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout
    second = prepare(toml, tmp_path / "home")
    assert json.loads(second.stdout)["nodes"][1]["action"] == "complete, not copied"


def test_prepare_refuses_a_worker_without_room_and_copies_nothing(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    head_cache = build_cache(tmp_path / "node1-cache", shards=3)
    big = head_cache / "hub" / f"models--{MODEL.replace('/', '--')}" / "blobs" / "padding"
    big.write_bytes(b"\0" * 600_000)  # the folder to copy is now ~600 KB
    small = tmp_path / "node2-cache"
    small.mkdir()
    worker = netns_cluster.nodes[1]

    def on_worker(*argv: str) -> subprocess.CompletedProcess[str]:
        # node2's sshd has its own mount namespace (ip netns exec): mount and look there
        return subprocess.run(ssh_argv(worker.target, list(argv)), capture_output=True, text=True, check=False)

    assert on_worker("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)).returncode == 0
    try:
        toml = caches_toml(netns_cluster, tmp_path, [head_cache, small])
        result = prepare(toml, tmp_path / "home")
        assert result.returncode == 4, result.stdout + result.stderr
        error = json.loads(result.stdout)
        assert error["where"] == "node2" and "bytes free" in error["message"] and "nothing was copied" in error["fix"]
        assert on_worker("find", str(small), "-type", "f").stdout == ""
    finally:
        on_worker("umount", str(small))


def test_preflight_checks_each_nodes_snapshot(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    good, bad = build_cache(tmp_path / "node1-cache"), build_cache(tmp_path / "node2-cache")
    blob = next((bad / "hub").rglob("snapshots/*/model-00001-of-00003.safetensors")).resolve()
    blob.write_bytes(blob.read_bytes()[:-100])  # a truncated download
    toml = caches_toml(netns_cluster, tmp_path, [good, bad])
    result = subprocess.run(
        [FLASHSPARK, "preflight", "--json", "--env", str(toml)],
        capture_output=True,
        text=True,
        env={**os.environ, "FLASHSPARK_HOME": str(tmp_path / "home")},
        timeout=120,
        check=False,
    )
    checks = {(c["node"], c["check"]): c for c in json.loads(result.stdout)["checks"]}
    assert checks[("node1", "model snapshot")]["ok"]
    bad_check = checks[("node2", "model snapshot")]
    assert not bad_check["ok"] and "model-00001-of-00003.safetensors: truncated" in bad_check["detail"]
    assert "model prepare" in bad_check["fix"] and result.returncode == 5
