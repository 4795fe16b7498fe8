"""`up --supervise --canary` on one real node (the process runtime), its engine a stand-in that keeps
serving, stays healthy and starts to garble: only the canaries can see it. The supervisor restarts the
deployment on their alert, and one journal tells the story: failed -> alert -> died -> stopped ->
restarted -> passing again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flashspark.watch.keeper import JOURNAL, supervise_with_canary
from tests.cluster.test_one_node import free_port
from tests.cluster.test_supervisor import Quiet, StandInDeployment
from tests.watch.test_monitor import fetch


def read(journal: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []


async def wait_for(journal: Path, predicate: Any, timeout_s: float = 60) -> list[dict[str, Any]]:
    for _ in range(int(timeout_s / 0.1)):
        events = read(journal)
        if predicate(events):
            return events
        await asyncio.sleep(0.1)
    raise AssertionError(f"not seen in {timeout_s} s: {read(journal)[-10:]}")


async def test_a_garbling_engine_is_restarted_on_the_canarys_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = free_port()
    deployment = StandInDeployment(
        tmp_path,
        monkeypatch,
        extra=f"[watch]\ninterval_s = 0.2\nfailures_to_alert = 2\nexporter_port = {exporter}\n",
    )
    await deployment.start()
    run_dir = deployment.journal.parent
    journal = run_dir / JOURNAL
    task = asyncio.create_task(
        supervise_with_canary(deployment.recipe, events=Quiet(), max_restarts=1, run_dir=run_dir)
    )
    try:
        await wait_for(journal, lambda events: any(e["event"] == "round" and e["ok"] for e in events))
        fault_at = len(read(journal))
        deployment.control.write_text("garble")  # /health stays 200, the engine stays up
        await wait_for(journal, lambda events: any(e["event"] == "stopped" for e in events))
        deployment.control.write_text("ok")
        await wait_for(journal, lambda events: any(e["event"] == "restarted" for e in events))
        events = await wait_for(
            journal,
            lambda events: any(
                e["event"] == "round" and e["ok"]
                for e in events[next(i for i, e in enumerate(events) if e["event"] == "restarted") :]
            ),
        )
        # the exporter lives on this event loop: ask it without blocking the loop
        status, body = await fetch(exporter, "/metrics")
        page = body.decode()
    finally:
        await deployment.stop(task)
    after_fault = events[fault_at:]
    story = [e for e in after_fault if e["event"] in ("alert", "died", "stopped", "restarted")]
    # smoke and the agent prompt both see the junk, in the same rounds: two alerts, then one restart
    assert [e["event"] for e in story] == ["alert", "alert", "died", "stopped", "restarted"]
    assert {e["probe"] for e in story[:2]} == {"smoke", "agent"}
    rounds_before_alert = [
        e for e in after_fault[: [e["event"] for e in after_fault].index("alert")] if e["event"] == "round"
    ]
    # the alert came on the second failed round after the fault (at most one round was mid-flight at the switch)
    assert len([r for r in rounds_before_alert if not r["ok"]]) <= 2
    died = next(e for e in after_fault if e["event"] == "died")
    assert died["source"] == "supervisor" and died["reason"].startswith("canary smoke failed 2 rounds in a row")
    assert deployment.starts() == 2  # the first boot and one restart
    # the supervisor's own journal agrees
    assert [e["event"] for e in deployment.events()][:4] == ["watching", "died", "stopped", "restarted"]
    # the exporter serves the restarted deployment's fresh canary: no alert, passing
    assert status == 200 and 'flashspark_canary_alert{probe="smoke"} 0' in page
    assert 'flashspark_canary_ok{probe="smoke"} 1' in page


async def test_canary_without_supervise_is_refused() -> None:
    import subprocess
    import sys

    flashspark = str(Path(sys.executable).parent / "flashspark")
    result = subprocess.run([flashspark, "up", "--canary"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "--canary watches for the supervisor" in result.stderr
    assert "add --supervise" in result.stderr


async def test_the_monitor_sees_each_engine_and_its_last_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flashspark.cluster.lifecycle import down
    from flashspark.watch import nodes

    deployment = StandInDeployment(tmp_path, monkeypatch)
    reads = 0
    real = nodes.read_logs

    async def counted(recipe: Any, *, lines: int) -> list[tuple[str, str]]:
        nonlocal reads
        reads += 1
        return await real(recipe, lines=lines)

    monkeypatch.setattr(nodes, "read_logs", counted)
    probe = nodes.node_probe(deployment.recipe, log_every_s=3600)
    before = await probe()
    await deployment.start()
    try:
        running = await probe()
        again = await probe()
    finally:
        await down(deployment.recipe, events=Quiet())
    after = await probe()
    assert [(v.node, v.engine, v.detail) for v in before] == [("local", "unknown", "not started")]
    assert [(v.node, v.rank, v.engine) for v in running] == [("local", 0, "running")]
    assert running[0].last_log is not None and running[0].last_log.startswith("stand-in engine serving stand-in")
    assert again[0].last_log == running[0].last_log and reads == 1  # read once per log_every_s, not per refresh
    assert [v.engine for v in after] == ["unknown"]  # stopped: no recorded state any more
