"""A candidate whose engine will not boot is a result, not a crash: status failed, the reason from its
log, and no secret of the recipe in it (the engine printed its whole environment before dying). A
candidate cut short mid-bench stops its deployment (a stand-in engine: the cut lands at an exact point;
the real engine's interrupted tune, cut mid-boot, is tests/engine/test_tune_engine.py's)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from flashspark.cluster.state import state_path
from flashspark.recipe import resolve_recipe
from flashspark.recipe.workload import Workload
from flashspark.tune.candidates import Candidate
from flashspark.tune.measure import measure
from tests.cluster.conftest import standin_launcher
from tests.conftest import group_members
from tests.tune.test_resume import Quiet

SECRET = "sk-never-in-a-result-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_engine_that_dies_at_boot_is_a_failed_candidate_with_its_reason_and_no_secret(tmp_path: Path) -> None:
    engine = tmp_path / "vllm"
    engine.write_text("#!/bin/sh\nenv\necho 'RuntimeError: CUDA out of memory'\nexit 1\n")
    engine.chmod(0o755)
    recipe = resolve_recipe(
        profile="local-cpu",
        sets=[f"VLLM_BIN={engine}", "DSPARK_MODEL=example/none", f"VLLM_PORT={free_port()}", f"VLLM_API_KEY={SECRET}"],
    ).recipe
    folder = tmp_path / "candidate"
    result = await measure(Candidate(id="recipe", settings={}), recipe, Workload(), folder, Quiet())
    assert result.status == "failed" and result.rounds == []
    assert result.error is not None and "CUDA out of memory" in result.error
    assert SECRET not in result.error and "VLLM_API_KEY" in result.error  # the line is there, its value masked
    assert result.evidence == str(folder)


async def test_a_candidate_cut_short_mid_bench_stops_its_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHSPARK_HOME", str(tmp_path / "home"))
    launcher = standin_launcher(tmp_path)
    control = tmp_path / "control"
    control.write_text("slow")
    port = free_port()
    config = tmp_path / "candidate.toml"
    config.write_text(
        'profile = "local-cpu"\n[model]\nid = "example/stand-in"\nserved_name = "stand-in"\n'
        f'[api]\nport = {port}\n[cluster]\nname = "cut"\nvllm_bin = "{launcher}"\n'
        "[lifecycle]\nport_timeout_s = 30\nstop_timeout_s = 2\n"
        f'[env.standin]\nSTANDIN_CONTROL = "{control}"\n'
    )
    recipe = resolve_recipe(config=config).recipe
    folder = tmp_path / "candidate"
    task = asyncio.create_task(measure(Candidate(id="k3", settings={}), recipe, Workload(), folder, Quiet()))
    while not (folder / "bench").exists():
        assert not task.done(), task.result()
        await asyncio.sleep(0.05)
    pgid = json.loads(state_path(recipe).read_text())["nodes"][0]["pgid"]
    await asyncio.sleep(0.5)  # requests in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (folder / "boot.json").is_file() and not (folder / "result.json").exists()
    assert not state_path(recipe).exists() and group_members(pgid) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing serves the candidate's port
