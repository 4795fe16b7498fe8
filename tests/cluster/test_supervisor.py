"""The supervisor's paths on one real node (this machine, the process runtime), its engine a stand-in
that dies, turns sick or leaves an orphan on command: the restart budget, exact; a death by /health;
a down that is not clean is not restarted over. The lifecycle runs in this process (so that the
mutation run sees these tests exercise the supervisor); the CLI's `up --supervise` is covered by
tests/cluster/test_two_node_vllm.py with the real engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from flashspark.cluster.lifecycle import down, up
from flashspark.cluster.supervisor import supervise
from flashspark.errors import ClientError, ClusterError, NotRunning
from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import Recipe
from tests.cluster.conftest import standin_launcher
from tests.cluster.test_one_node import free_port


class Quiet:
    """Lifecycle events, kept for the assertions instead of printed."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, str, str]] = []
        self.notes: list[str] = []

    def phase(self, name: str, status: str, detail: str = "") -> None:
        self.phases.append((name, status, detail))

    def log_line(self, node: str, line: str) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)


class StandInDeployment:
    """A one-node deployment whose engine is tests/cluster/standin_engine.py, and its control file."""

    def __init__(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, health_failures: int = 2, extra: str = ""
    ) -> None:
        self.control = tmp_path / "control"
        self.control.write_text("ok")
        launcher = standin_launcher(tmp_path)
        toml = tmp_path / "solo.toml"
        toml.write_text(
            'profile = "local-cpu"\n'
            f'[cluster]\nname = "supervised"\nvllm_bin = "{launcher}"\n'
            '[model]\nid = "example/stand-in"\nserved_name = "stand-in"\n'
            f"[api]\nport = {free_port()}\n"
            "[lifecycle]\nport_timeout_s = 30\nstop_timeout_s = 2\nsupervise_check_s = 0.2\n"
            f"supervise_health_failures = {health_failures}\nsupervise_backoff_s = 0\n"
            f'[env.standin]\nSTANDIN_CONTROL = "{self.control}"\n' + extra
        )
        monkeypatch.setenv("FLASHSPARK_HOME", str(tmp_path / "home"))
        # An orphan holding the port is seen in 1 s, not in the 10 s `down` gives a closing socket.
        monkeypatch.setattr("flashspark.cluster.lifecycle.PORT_RELEASE_S", 1.0)
        self.recipe: Recipe = resolve_recipe(config=toml).recipe
        self.journal = Path()

    async def start(self) -> None:
        started = await up(self.recipe, events=Quiet())
        self.journal = Path(started.run_dir) / "supervisor.jsonl"

    def events(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]

    async def wait_for(self, kind: str, count: int = 1, timeout_s: float = 60) -> list[dict[str, Any]]:
        for _ in range(int(timeout_s / 0.1)):
            found = [e for e in self.events() if e["event"] == kind]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {count} {kind!r} events: {self.events()}")

    def starts(self) -> int:
        path = Path(f"{self.control}.starts")
        return len(path.read_text().splitlines()) if path.exists() else 0

    async def stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClusterError):
            await task
        self.control.write_text("die")
        orphan = Path(f"{self.control}.orphan")
        if orphan.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(orphan.read_text()), signal.SIGKILL)
        await down(self.recipe, events=Quiet())


async def test_the_restart_budget_is_exact_and_a_spent_budget_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = StandInDeployment(tmp_path, monkeypatch)
    await deployment.start()
    events = Quiet()
    task = asyncio.create_task(supervise(deployment.recipe, events=events, max_restarts=2))
    try:
        for restart in (1, 2):
            # One death each: the supervisor restarts at once (no backoff), before a test could say "ok".
            deployment.control.write_text("die-once")
            await deployment.wait_for("stopped", restart)
            assert len(await deployment.wait_for("restarted", restart)) == restart
        deployment.control.write_text("die")  # the third death: the budget of 2 is spent
        with pytest.raises(ClusterError, match=r"restart budget \(2\) is spent") as spent:
            await asyncio.wait_for(asyncio.shield(task), 60)
        # the error points at the journal and says what to do
        assert spent.value.where == str(deployment.journal)
        assert spent.value.fix == (
            "read the log tails in the run directory; raise --max-restarts only once the cause is known"
        )
    finally:
        await deployment.stop(task)
    kinds = [e["event"] for e in deployment.events()]
    assert kinds.count("restarted") == 2 and kinds[-1] == "gave up" and deployment.starts() == 3
    reason = "the engine of local (rank 0) exited"
    journal = deployment.events()
    died = [e for e in journal if e["event"] == "died"]
    assert len(died) == 3 and all(e["reason"] == reason for e in died)
    assert all(Path(e["tails"]).name == f"death-{n}" for n, e in enumerate(died, start=1))
    assert all(Path(e["tails"], "rank0-local.log.tail").is_file() for e in died)  # each death's evidence kept
    first_run = str(deployment.journal.parent)
    assert journal[0] == {**journal[0], "event": "watching", "nodes": ["local"], "run_dir": first_run}
    stopped = [e for e in journal if e["event"] == "stopped"]
    assert all(e["clean"] is True and e["stopped"] == ["local"] and e["unreachable"] == {} for e in stopped)
    restarted = [e for e in journal if e["event"] == "restarted"]
    assert [e["restart"] for e in restarted] == [1, 2] and all(e["run_dir"] != first_run for e in restarted)
    assert all(isinstance(e["boot_s"], float) and isinstance(e["t"], float) for e in restarted)
    # each restart names its own new run directory and how long the boot took, to a tenth of a second
    assert len({e["run_dir"] for e in restarted} | {first_run}) == 3
    assert all(Path(e["run_dir"]).is_dir() for e in restarted)
    assert all(0 < e["boot_s"] < 120 and round(e["boot_s"], 1) == e["boot_s"] for e in restarted)
    assert journal[-1] == {**journal[-1], "event": "gave up", "restarts": 2}
    assert events.notes == [f"supervisor: restart {n}/2 in 0 s ({reason})" for n in (1, 2)]
    assert [p for p in events.phases if p[0] == "supervisor"] == [
        ("supervisor", "fail", reason),
        ("supervisor", "ok", "restart 1 serving again"),
        ("supervisor", "fail", reason),
        ("supervisor", "ok", "restart 2 serving again"),
        ("supervisor", "fail", reason),
    ]


async def test_a_deployment_whose_health_fails_is_restarted_though_its_engine_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = StandInDeployment(tmp_path, monkeypatch, health_failures=3)
    await deployment.start()
    task = asyncio.create_task(supervise(deployment.recipe, events=Quiet(), max_restarts=1))
    try:
        deployment.control.write_text("sick")
        [died] = await deployment.wait_for("died")
        deployment.control.write_text("ok")
        restarted = await deployment.wait_for("restarted")
    finally:
        await deployment.stop(task)
    assert died["reason"] == "/health failed 3 checks in a row"
    assert len(restarted) == 1 and deployment.starts() == 2


async def test_one_failed_health_check_below_the_threshold_is_not_a_death(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = StandInDeployment(tmp_path, monkeypatch, health_failures=1000)
    await deployment.start()
    task = asyncio.create_task(supervise(deployment.recipe, events=Quiet(), max_restarts=1))
    try:
        deployment.control.write_text("sick")
        await asyncio.sleep(1.5)  # ~7 failed checks, far below 1000
        deployment.control.write_text("ok")
        await asyncio.sleep(0.5)
        assert [e["event"] for e in deployment.events()] == ["watching"] and not task.done()
    finally:
        await deployment.stop(task)


async def test_failed_health_checks_count_only_in_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = StandInDeployment(tmp_path, monkeypatch, health_failures=3)
    await deployment.start()
    task = asyncio.create_task(supervise(deployment.recipe, events=Quiet(), max_restarts=1))
    try:
        for _ in range(4):  # ~1-2 failed checks (0.2 s apart) each time, then healthy again
            deployment.control.write_text("sick")
            await asyncio.sleep(0.25)
            deployment.control.write_text("ok")
            await asyncio.sleep(0.5)
        assert [e["event"] for e in deployment.events()] == ["watching"] and not task.done()
    finally:
        await deployment.stop(task)


async def test_a_deployment_that_cannot_be_stopped_cleanly_is_not_restarted_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = StandInDeployment(tmp_path, monkeypatch)
    await deployment.start()
    task = asyncio.create_task(supervise(deployment.recipe, events=Quiet(), max_restarts=3))
    try:
        deployment.control.write_text("orphan")  # the engine dies, its orphan keeps the API port
        with pytest.raises(ClusterError, match="could not be stopped cleanly") as unclean:
            await asyncio.wait_for(asyncio.shield(task), 60)
        assert unclean.value.where == str(deployment.journal)
        assert unclean.value.fix == "run `flashspark down` and fix what it names, then `flashspark up` again"
    finally:
        await deployment.stop(task)
    events = deployment.events()
    stopped = next(e for e in events if e["event"] == "stopped")
    assert stopped["clean"] is False
    assert events[-1]["event"] == "gave up" and events[-1]["reason"] == "down was not clean"
    assert deployment.starts() == 1  # no second engine was started beside the leftover


class ScriptedHealth:
    """A probe client whose /health answers from a script: a status, or "down" for a failed connection."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.calls = 0

    async def __aenter__(self) -> ScriptedHealth:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def health(self) -> int:
        self.calls += 1
        answer = self.script.pop(0)
        if answer == "down":
            raise ClientError("GET /health failed: connection refused")
        return int(answer)


class AliveRuntime:
    async def alive(self, transport: object, process: object) -> bool:
        return True


@pytest.mark.parametrize(
    ("script", "threshold", "checks"),
    [
        # a failure between healthy answers never adds up: only failures in a row count
        ([200, 503, 200, 503, 503], 2, 5),
        ([503, 200, 503, 200, 503, 503, 503], 3, 7),
        # a failed connection is a failed check, as a 503 is
        (["down", 200, "down", "down"], 2, 4),
        (["down"], 1, 1),
    ],
)
async def test_only_failed_health_checks_in_a_row_count_and_a_refused_connection_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: list[int | str], threshold: int, checks: int
) -> None:
    from flashspark.cluster import supervisor
    from flashspark.cluster.state import DeploymentState, NodeProcess

    deployment = StandInDeployment(tmp_path, monkeypatch)
    health = ScriptedHealth(script)
    monkeypatch.setattr(supervisor, "probe_client", lambda url, key: health)
    monkeypatch.setattr(supervisor, "runtime_for", lambda recipe: AliveRuntime())
    monkeypatch.setattr(supervisor, "transport_for", lambda node: None)
    state = DeploymentState.started(
        deployment.recipe,
        run_dir=str(tmp_path),
        base_url="http://127.0.0.1:9/v1",
        nodes=[NodeProcess(node="local", rank=0, log_path=str(tmp_path / "log"))],
    )
    reason = await supervisor.first_death(deployment.recipe, state, check_s=0, health_failures=threshold)
    assert reason == f"/health failed {threshold} checks in a row"
    assert health.calls == checks


async def test_supervising_nothing_is_an_error_saying_how_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = StandInDeployment(tmp_path, monkeypatch)  # resolved, never started
    with pytest.raises(NotRunning) as caught:
        await supervise(deployment.recipe, events=Quiet(), max_restarts=1)
    assert caught.value.message == "deployment 'supervised' is not running: nothing to supervise"
    assert caught.value.fix == "start it with `flashspark up --supervise`"
