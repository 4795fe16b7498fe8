"""Shared fixtures: every test runs in a clean environment and its own folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "cases"

# Variables FlashSpark reads from the process environment.
_OWN_VARIABLES = ("FLASHSPARK_HOME", "FLASHSPARK_CONFIG")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in tmp_path with FLASHSPARK_HOME inside it and no FlashSpark variables leaking in."""
    for name in _OWN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "flashspark-home"
    monkeypatch.setenv("FLASHSPARK_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def filled_env() -> Path:
    """A filled-in .env.dspark carrying every variable of the reference recipe."""
    return CASES / "filled.env.dspark"


def write_env(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def environ_without_flashspark() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES}
