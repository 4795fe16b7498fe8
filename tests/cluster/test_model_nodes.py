"""`model verify --all-nodes`: each node's own HF cache checked over SSH by the same probe (marker: cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import NetnsCluster
from tests.provenance.test_model_verify import COMMIT, MODEL, build_cache

pytestmark = pytest.mark.cluster
FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def caches_toml(cluster: NetnsCluster, tmp_path: Path, caches: list[Path]) -> Path:
    nodes = "".join(
        f'[[nodes]]\nname = "{n.name}"\nssh = "root@{n.address}"\nssh_identity = "{cluster.client_key}"\n'
        f'ssh_options = ["UserKnownHostsFile={cluster.known_hosts}", "ConnectTimeout=3"]\n'
        f'vllm_host_ip = "{n.address}"\nsocket_ifname = "eth0"\nhf_cache = "{cache}"\n'
        for n, cache in zip(cluster.nodes, caches, strict=True)
    )
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
