"""A candidate whose engine will not boot is a result, not a crash: status failed, the reason from its
log, and no secret of the recipe in it (the engine printed its whole environment before dying)."""

from __future__ import annotations

import socket
from pathlib import Path

from flashspark.recipe import resolve_recipe
from flashspark.recipe.workload import Workload
from flashspark.tune.candidates import Candidate
from flashspark.tune.measure import measure
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
