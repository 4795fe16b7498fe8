"""`up` cut short by a signal, through the real CLI on this machine (the process runtime) with a stand-in
engine whose boot takes as long as the test needs: Ctrl-C, SIGTERM (systemd, `timeout`, a CI runner)
and a hung-up terminal stop the booting engine and end in exit 130 with the failure kept; Ctrl-C counts
even when `up` was started with SIGINT ignored, as every background job is. A supervising `up` that is
signalled stops watching and leaves the deployment serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.conftest import standin_launcher
from tests.cluster.test_fleet_standin import cli
from tests.cluster.test_one_node import free_port
from tests.cluster.test_two_node_vllm import read_json_document
from tests.conftest import group_members

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def solo_toml(tmp_path: Path, boot_s: float) -> Path:
    launcher = standin_launcher(tmp_path)
    toml = tmp_path / "solo.toml"
    toml.write_text(
        'profile = "local-cpu"\n[model]\nid = "example/stand-in"\nserved_name = "stand-in"\n'
        f'[api]\nport = {free_port()}\n[cluster]\nname = "solo"\nvllm_bin = "{launcher}"\n'
        "[lifecycle]\nport_timeout_s = 120\nstop_timeout_s = 2\n"
        f'[env.standin]\nSTANDIN_CONTROL = "{tmp_path / "control"}"\nSTANDIN_BOOT_S = "{boot_s}"\n'
    )
    return toml


def start(toml: Path, *args: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    def ignoring() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a job it starts with `&`

    return subprocess.Popen(
        [FLASHSPARK, "up", *args, "--json", "--quiet", "--env", str(toml)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FLASHSPARK_HOME": str(toml.parent / "home")},
        preexec_fn=ignoring if ignore_sigint else None,  # the child's own signal state is the point
    )


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("signum", "ignore_sigint"),
    [(signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGHUP", "Ctrl-C", "Ctrl-C to a background job"],
)
def test_up_signalled_mid_boot_stops_the_booting_engine(tmp_path: Path, signum: int, ignore_sigint: bool) -> None:
    toml = solo_toml(tmp_path, boot_s=60)
    state = tmp_path / "home" / "state" / "solo.json"
    up = start(toml, ignore_sigint=ignore_sigint)
    try:
        wait_for(state.exists, "the engine to start")
        pgid = json.loads(state.read_text())["nodes"][0]["pgid"]
        assert group_members(pgid) != []
        up.send_signal(signum)
        _, stderr = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 130, stderr[-2000:]
    assert group_members(pgid) == [] and not state.exists()
    (failure,) = (tmp_path / "home" / "runs").glob("*-solo-up/failure.json")
    assert json.loads(failure.read_text())["left_after_stop"] == {}


def test_a_signalled_supervisor_stops_watching_and_leaves_the_deployment_serving(tmp_path: Path) -> None:
    toml = solo_toml(tmp_path, boot_s=0)
    supervisor = start(toml, "--supervise", ignore_sigint=True)
    try:
        assert supervisor.stdout is not None
        pgid = read_json_document(supervisor.stdout)["nodes"][0]["pgid"]  # type: ignore[index]
        time.sleep(0.5)  # watching
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=30)
        assert supervisor.returncode == 130, stderr[-2000:]
        assert group_members(pgid) != [] and (tmp_path / "home" / "state" / "solo.json").exists()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.communicate()
        down = cli(toml, "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert group_members(pgid) == []
