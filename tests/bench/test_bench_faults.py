"""A bench against a server that stops answering ends in seconds, names why, and keeps what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flashspark.client import Timeouts
from tests.standin import Reply, StandIn, chunk, sse

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def stalls_after_role_chunk() -> Reply:
    return Reply(chunks=[(0.0, sse(chunk("", role="assistant")))], then="stall", stall_s=30)


def bench(url: str, out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [FLASHSPARK, "bench", "static", "--base-url", url, "--out", str(out), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, json.loads(done.stdout)


def test_a_server_that_stalls_after_its_first_chunk_stops_the_run_at_its_first_warm_up(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = stalls_after_role_chunk()
        code, payload = bench(server.url, tmp_path / "run", "--concurrency", "1,4,8", "--stall-timeout", "0.5")
        sent = len(server.requests)
    assert code == 4
    assert "warm-up" in payload["message"] and "(stall)" in payload["message"]
    assert "no data for 0.5 s" in payload["message"]  # the flag reached the client
    assert sent == 1  # no cell was started against a server that is not serving


def test_a_cell_where_no_request_is_answered_ends_the_run_and_keeps_the_cells_before_it(tmp_path: Path) -> None:
    with StandIn() as server:
        # The first cell (one request) is answered; from then on every request stalls.
        server.responder = lambda _request: stalls_after_role_chunk() if len(server.requests) > 1 else None
        code, payload = bench(
            server.url, tmp_path / "run", "--concurrency", "1,2,4", "--warmup", "0", "--stall-timeout", "0.5"
        )
        sent = len(server.requests)
    assert code == 4
    assert "every request of cell static-c2-r0 failed" in payload["message"]
    assert sent == 3  # cell c4 never ran
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [c["cell"] for c in results["cells"]] == ["static-c1-r0", "static-c2-r0"]
    assert results["cells"][0]["completed"] == 1 and results["cells"][1]["error_kinds"] == {"stall": 2}


def test_a_cell_with_one_answered_request_is_measured_not_abandoned(tmp_path: Path) -> None:
    with StandIn() as server:
        # In the two-request cell, one request is answered and one stalls: a sick server, measured as such.
        server.responder = lambda _request: stalls_after_role_chunk() if len(server.requests) == 3 else None
        code, payload = bench(
            server.url, tmp_path / "run", "--concurrency", "1,2,1", "--warmup", "0", "--stall-timeout", "0.5"
        )
    assert code == 4  # a failed request fails the bench, after every cell ran
    assert [c["cell"] for c in payload["cells"]] == ["static-c1-r0", "static-c2-r0", "static-c1-r0"]
    assert payload["cells"][1]["completed"] == 1 and payload["cells"][2]["completed"] == 1


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--stall-timeout", "0"),
        ("--connect-timeout", "-1"),
        ("--request-timeout", "inf"),
        ("--first-byte-timeout", "x"),
    ],
)
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_exit_2(flag: str, value: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [FLASHSPARK, "smoke", "--base-url", "http://127.0.0.1:9", flag, value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert flag in done.stderr and "Traceback" not in done.stderr


def test_the_default_budgets_notice_a_stall_in_seconds_and_a_dead_server_before_prefill_could_end() -> None:
    budgets = Timeouts()
    assert budgets.stall_s <= 30 and budgets.connect_s <= 10
    assert budgets.first_byte_s <= 120


@pytest.mark.parametrize("command", [["status"], ["capture"], ["bench", "static"], ["sanity"], ["validate"]])
def test_every_command_that_talks_to_a_server_takes_the_timeouts(command: list[str]) -> None:
    done = subprocess.run(
        [FLASHSPARK, *command, "--profile", "local-cpu", "--stall-timeout", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--stall-timeout" in done.stderr and "Traceback" not in done.stderr
