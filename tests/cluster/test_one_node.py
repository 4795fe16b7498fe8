"""One lifecycle: a one-node deployment on this machine runs through the same path as a cluster.

The node's engine is a stand-in script (it records how it was started, then dies), so these
tests reach the boundaries quickly: which binary ran, with which environment, and what a
failed boot leaves behind. The real engine on this path is proven by tests/engine/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def one_node_toml(tmp_path: Path, vllm_bin: Path, port: int) -> Path:
    toml = tmp_path / "one.toml"
    toml.write_text(
        'profile = "local-cpu"\n'
        f'[cluster]\nname = "solo"\nvllm_bin = "{vllm_bin}"\n'
        '[model]\nid = "example/stand-in"\nserved_name = "stand-in"\n'
        f"[api]\nport = {port}\n"
        "[lifecycle]\nport_timeout_s = 30\n"
        '[env.probe]\nPROBE_MARK = "from-the-recipe"\n'
    )
    return toml


def stand_in(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "started-with.txt"
    script = tmp_path / "my-vllm"
    script.write_text(
        f'#!/bin/sh\n{{ echo "argv: $*"; env; }} > "{record}"\necho "stand-in engine giving up" >&2\nexit 3\n'
    )
    script.chmod(0o755)
    return script, record


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_one_node_process_deployment_runs_its_own_vllm_bin_and_fails_cleanly(tmp_path: Path) -> None:
    script, record = stand_in(tmp_path)
    toml = one_node_toml(tmp_path, script, free_port())
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "FLASHSPARK_HOME": str(home), "FLASHSPARK_SECRET_PROBE": "do-not-pass"}
    up = subprocess.run(
        [FLASHSPARK, "up", "--env", str(toml), "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert up.returncode == 5, up.stdout + up.stderr
    error = json.loads(up.stdout)
    assert error["error"] == "PhaseFailed" and "exited" in error["message"]
    # The configured binary ran (no engine was installed or started instead), with the plan's argv and env.
    started = record.read_text()
    assert started.startswith("argv: serve ") and "serve example/stand-in --served-model-name stand-in" in started
    assert "PROBE_MARK=from-the-recipe" in started
    assert "FLASHSPARK_" not in started  # the caller's FlashSpark variables stay out of the engine
    assert "engine" not in up.stderr.split("preflight")[0]  # provisioning had nothing to do
    # The failed boot left its evidence in the run directory and nothing running.
    [run_dir] = (home / "runs").glob("*-solo-up")
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["left_after_stop"] == {} and set(failure["process_groups"]) == {"local"}
    assert "stand-in engine giving up" in (run_dir / "rank0-local.log.tail").read_text()
    assert "stand-in engine giving up" in error["log_tail"]
    assert not (home / "state" / "solo.json").exists()
    down = subprocess.run([FLASHSPARK, "down", "--env", str(toml), "--json"], capture_output=True, text=True, env=env)
    assert down.returncode == 0 and json.loads(down.stdout)["was_running"] is False


def test_the_embedded_engine_is_refused_for_a_node_reached_over_ssh(tmp_path: Path) -> None:
    # local-cpu's vllm_bin is the embedded engine; a node reached over ssh must name its own.
    toml = tmp_path / "c.toml"
    toml.write_text('profile = "local-cpu"\n[[nodes]]\nname = "far"\nssh = "root@far.example"\n')
    env = {"PATH": "/usr/bin:/bin", "FLASHSPARK_HOME": str(tmp_path / "home")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLASHSPARK, *args, "--env", str(toml), "--json"], capture_output=True, text=True, env=env
        )

    check = cli("config", "check")
    warnings = [p for p in json.loads(check.stdout)["problems"] if p["key"] == "VLLM_BIN"]
    assert check.returncode == 0 and [w["severity"] for w in warnings] == ["warning"]
    assert "'far' is reached over ssh" in warnings[0]["rule"]
    up = cli("up")  # refused before anything is installed, reached or started
    assert up.returncode == 2 and json.loads(up.stdout)["key"] == "VLLM_BIN"
    assert not (tmp_path / "home" / "runs").exists() and not (tmp_path / "home" / "engine").exists()
    toml.write_text(toml.read_text().replace("[[nodes]]", '[cluster]\nvllm_bin = "/opt/vllm/bin/vllm"\n[[nodes]]'))
    check = cli("config", "check")
    assert check.returncode == 0 and not [p for p in json.loads(check.stdout)["problems"] if p["key"] == "VLLM_BIN"]


def test_a_node_folder_another_user_could_change_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    script, record = stand_in(tmp_path)
    toml = one_node_toml(tmp_path, script, free_port())
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "FLASHSPARK_HOME": str(home)}
    folder = home / "nodes" / "solo" / "local"
    for make_unsafe in (lambda: folder.chmod(0o777), lambda: os.chown(folder, 65534, 65534)):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        make_unsafe()
        up = subprocess.run(
            [FLASHSPARK, "up", "--env", str(toml), "--json"], capture_output=True, text=True, env=env, timeout=120
        )
        assert up.returncode == 5, up.stdout + up.stderr
        assert "not a private folder" in json.loads(up.stdout)["message"]
        assert not (folder / "node.env").exists() and not record.exists()  # nothing written, nothing started
        subprocess.run(["rm", "-rf", str(folder)], check=True)
