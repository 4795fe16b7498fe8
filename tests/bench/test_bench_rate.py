"""`bench rate`: Poisson arrivals (not a fixed gap), reproducible by seed, capped in flight when asked."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from flashspark.bench.runner import rate_cells, staggered_cells, static_cells
from tests.standin import StandIn, stream_reply

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def gaps(arrivals: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(arrivals)]


def test_rate_arrivals_are_poisson_at_the_asked_rate() -> None:
    [cell] = rate_cells(8.0, 4000, None, seed=1)
    between = gaps(cell.arrivals_s)
    assert cell.arrivals_s[0] == 0.0 and len(cell.arrivals_s) == 4000
    assert statistics.fmean(between) == pytest.approx(1 / 8.0, rel=0.05)
    # Exponential gaps: the standard deviation equals the mean (a fixed gap has none, uniform ~0.58).
    assert statistics.pstdev(between) / statistics.fmean(between) == pytest.approx(1.0, abs=0.08)
    assert min(between) < 0.2 * (1 / 8.0) < 3 * (1 / 8.0) < max(between)


def test_rate_arrivals_are_reproducible_by_seed_and_carry_the_cap() -> None:
    [a], [b], [c] = rate_cells(2.0, 50, 3, seed=7), rate_cells(2.0, 50, 3, seed=7), rate_cells(2.0, 50, 3, seed=8)
    assert a.arrivals_s == b.arrivals_s != c.arrivals_s
    assert (a.name, a.shape, a.concurrency_cap, a.level) == ("rate-2rps-n50", "rate", 3, 3)


def test_static_and_staggered_schedules() -> None:
    cells = static_cells((1, 4), rounds=2)
    assert [(c.name, c.arrivals_s, c.level, c.round) for c in cells] == [
        ("static-c1-r0", [0.0], 1, 0),
        ("static-c1-r1", [0.0], 1, 1),
        ("static-c4-r0", [0.0] * 4, 4, 0),
        ("static-c4-r1", [0.0] * 4, 4, 1),
    ]
    [stagger] = staggered_cells(3, 0.25)
    assert (stagger.name, stagger.arrivals_s, stagger.level) == ("staggered-n3-g0.25", [0.0, 0.25, 0.5], 3)


def test_bench_rate_keeps_its_cap_on_requests_in_flight(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = stream_reply([(0.3, "x")], completion_tokens=1)  # each request takes ~0.3 s
        done = subprocess.run(
            [
                FLASHSPARK,
                "bench",
                "rate",
                "--base-url",
                server.url,
                "--rate",
                "40",
                "--requests",
                "12",
                "--max-concurrency",
                "2",
                "--warmup",
                "0",
                "--out",
                str(tmp_path / "run"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        most = server.max_in_flight
    assert done.returncode == 0, done.stderr[-2000:]
    [cell] = json.loads(done.stdout)["cells"]
    assert cell["shape"] == "rate" and cell["requests"] == 12 and cell["completed"] == 12
    assert most == 2  # 12 arrivals in ~0.3 s, never more than the cap at the server
