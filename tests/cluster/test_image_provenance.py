"""`image build` / `image verify` on nodes with real Docker engines (marker: cluster).

The base is the locally built stub image; the overlay adds a file and a patch stage
changes a file of the base (fail closed). What is checked: the image is built once,
copied only where it differs, identical on both nodes, and a node whose image was
changed afterwards is named with the file that differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import STUB_IMAGE, NetnsCluster

pytestmark = pytest.mark.cluster
FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
TAG = "flashspark-test/runtime:prov"


def image_toml(cluster: NetnsCluster, tmp_path: Path, *, anchor: str = 'echo "stub vllm $*"') -> Path:
    overlay = tmp_path / "overlay"
    (overlay / "lib" / "dspark").mkdir(parents=True, exist_ok=True)
    (overlay / "lib" / "dspark" / "proposer.py").write_text("SLOTS = 'per request'\n")
    nodes = cluster.nodes_toml(lambda rank, node: f'checkout_dir = "{tmp_path}/deploy"\n')
    path = tmp_path / "image.toml"
    path.write_text(
        'profile = "local-cpu"\n[parallel]\ntensor_parallel_size = 2\n'
        f'[cluster]\nname = "prov"\nruntime = "compose"\nimage = "{TAG}"\nmaster_addr = "{cluster.nodes[0].address}"\n'
        f'[image]\nbase = "{STUB_IMAGE}"\noverlay_dir = "{overlay}"\nvllm_root = "/usr/local"\n'
        "[[image.patches]]\n"
        f'name = "mark-patched"\nfile = "bin/vllm"\nanchor = \'{anchor}\'\n'
        "replacement = 'echo \"stub vllm (patched) $*\"'\n"
        "[[image.checks]]\n"
        'name = "patched"\nfile = "bin/vllm"\npattern = \'^echo "stub vllm \\(patched\\)\'\ncount = 1\n' + nodes
    )
    return path


def cli(toml: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLASHSPARK_HOME": str(toml.parent / "home")}
    return subprocess.run(
        [FLASHSPARK, *args, "--env", str(toml)], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_built_once_copied_where_it_differs_verified_everywhere(docker_nodes: NetnsCluster, tmp_path: Path) -> None:
    toml = image_toml(docker_nodes, tmp_path)
    built = cli(toml, "image", "build", "--json")
    assert built.returncode == 0, built.stdout + built.stderr
    report = json.loads(built.stdout)
    assert {n: r["action"] for n, r in report["nodes"].items()} == {"node1": "built", "node2": "copied"}
    assert report["same_image_everywhere"]
    entries = {e["path"]: e for e in report["manifest"]["entries"]}
    assert entries["bin/vllm"]["origin"] == "patched-base" and entries["lib/dspark/proposer.py"]["origin"] == "overlay"
    manifest_file = Path(report["run_dir"]) / "image-manifest.json"
    assert json.loads(manifest_file.read_text()) == report["manifest"]

    again = json.loads(cli(toml, "image", "build", "--json").stdout)
    assert again["nodes"]["node2"]["action"] == "same image, not copied"

    verified = cli(toml, "image", "verify", "--json", "--manifest", str(manifest_file))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    rows = json.loads(verified.stdout)["nodes"]
    assert [r["manifest_sha256"] for r in rows] == [report["manifest_sha256"]] * 2
    assert all(r["problems"] == [] for r in rows)

    # node2's image is changed after the fact (a rebuild with the same tag): named, with the file.
    worker = docker_nodes.nodes[1]
    tamper = subprocess.run(
        ["docker", "build", "-q", "-t", TAG, "-"],
        input=f"FROM {TAG}\nRUN echo '# local edit' >> /usr/local/bin/vllm\n",
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": f"unix://{worker.docker_dir}/docker.sock", "DOCKER_BUILDKIT": "0"},
        check=False,
    )
    assert tamper.returncode == 0, tamper.stderr
    failed = cli(toml, "image", "verify", "--json")
    assert failed.returncode == 4, failed.stdout + failed.stderr
    result = json.loads(failed.stdout)
    assert not result["same_image_everywhere"] and "different images" in result["problems"][0]
    node1, node2 = result["nodes"]
    assert node1["problems"] == []
    assert any(p.startswith("bin/vllm: sha256") for p in node2["problems"]), node2


def test_a_patch_anchor_that_no_longer_matches_stops_the_build(docker_nodes: NetnsCluster, tmp_path: Path) -> None:
    toml = image_toml(docker_nodes, tmp_path, anchor='echo "stub engine $*"')
    built = cli(toml, "image", "build", "--json")
    assert built.returncode == 4, built.stdout + built.stderr
    error = json.loads(built.stdout)
    assert (
        error["error"] == "PatchFailed" and "bin/vllm" in error["message"] and "no longer matches" in error["message"]
    )
