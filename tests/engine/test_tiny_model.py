"""The tiny random-weight Llama on the same real engine: it serves, and what it serves is garbage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.conftest import Deployment, engine_env, free_port

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def tiny(engine_ready: None, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("tiny-home")
    port = free_port()
    sets = [
        "--set",
        "DSPARK_MODEL=local:tiny-random-llama",
        "--set",
        "SERVED_MODEL_NAME=tiny-random",
        "--set",
        "DEPLOYMENT_NAME=tiny",
        "--set",
        f"VLLM_PORT={port}",
    ]
    deployment = Deployment(home=home, port=port, env=engine_env(home), up=None)  # type: ignore[arg-type]
    deployment.up = deployment.cli("up", "--local", "--quiet", "--json", *sets)
    yield deployment, sets
    deployment.cli("down", *sets, timeout=120)


def test_tiny_random_model_serves_and_fails_the_smoke_gate(tiny) -> None:
    deployment, sets = tiny
    assert deployment.up.returncode == 0, deployment.up.stderr
    assert Path(json.loads(deployment.up.stdout)["boot_json"]).is_file()
    result = deployment.cli("smoke", "--json", *sets)
    report = json.loads(result.stdout)
    assert result.returncode == 4
    assert "expected 'NVFP4 DSPARK OK'" in report["requests"][0]["error"]
    assert report["requests"][0]["content"] != "NVFP4 DSPARK OK"
    assert report["requests"][0]["completion_tokens"] > 0
    sanity = deployment.cli("sanity", "--json", "--concurrency", "1,2", "--max-tokens", "96", *sets)
    sanity_report = json.loads(sanity.stdout)
    assert sanity.returncode == 4
    fired = {name for level in sanity_report["levels"] for name in level["detectors_fired"]}
    assert fired, "the garbage model passed every detector"
    down = deployment.cli("down", *sets)
    assert down.returncode == 0, down.stderr
