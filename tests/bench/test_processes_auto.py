"""`--processes auto`: the process count from the offered chunk rate and one process's capacity.

The arithmetic is checked at its boundaries (half of capacity exactly, one chunk/s over it, the
cores and streams that bound it); the capacity probe against a client made slow on purpose; and
a whole cell chosen and run over several processes against a stand-in of known pace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from flashspark.bench.autoscale import (
    HEADROOM,
    ProcessChoice,
    choose_processes,
    open_streams,
    settle_timing,
    stream_chunk_rate,
)
from flashspark.bench.calibration import CAPACITY_STREAMS, CAPACITY_TOKENS, Calibrator
from flashspark.bench.options import BenchOptions
from flashspark.bench.results import ResultsWriter, read_requests
from flashspark.bench.runner import CellPlan, run_bench
from flashspark.cli.main import main
from flashspark.client import ChatRequest, ChatResult, OpenAIClient
from tests.standin import StandIn, stream_reply


def warm(chunks: int, every_s: float) -> ChatResult:
    """A warm-up result whose chunks came `every_s` apart."""
    times = [0.1 + i * every_s for i in range(chunks)]
    return ChatResult(ok=True, chunk_times_s=times, e2e_s=times[-1] + 0.01)


def test_a_stream_s_rate_is_its_fastest_warm_up_that_streamed() -> None:
    assert stream_chunk_rate([]) is None
    assert stream_chunk_rate([warm(1, 0.01), ChatResult(ok=False, chunk_times_s=[0.1, 0.2])]) is None
    rate, seconds = stream_chunk_rate([warm(11, 0.01), warm(11, 0.005)]) or (0.0, 0.0)
    assert rate == pytest.approx(200.0) and seconds == pytest.approx(0.16)


def test_half_of_capacity_is_one_process_and_one_chunk_more_is_two() -> None:
    # 10 streams x 100 chunks/s = 1,000 offered; capacity 2,000 kept under half: exactly one process.
    at_half = choose_processes([0.0] * 10, None, [warm(11, 0.01)], 1000 / HEADROOM, cores=16)
    assert at_half.processes == 1
    over = choose_processes([0.0] * 10, None, [warm(11, 0.01)], 999 / HEADROOM, cores=16)
    assert over.processes == 2
    assert "10 streams x 100 chunks/s" in over.reason and "2 process(es)" in over.reason


def test_the_count_is_held_to_the_cores_and_to_the_streams() -> None:
    many = choose_processes([0.0] * 100, None, [warm(11, 0.001)], 1000.0, cores=8)  # wants 200
    assert many.processes == 8 and "held to 8 (usable cores)" in many.reason
    few = choose_processes([0.0] * 3, None, [warm(11, 0.001)], 100.0, cores=16)  # wants 60, has 3 streams
    assert few.processes == 3 and "held to 3 (streams)" in few.reason
    capped = choose_processes([0.0] * 100, 2, [warm(11, 0.001)], 100.0, cores=16)  # the cap: 2 at once
    assert capped.processes == 2


def test_without_a_streamed_warm_up_it_says_so_and_runs_one_process() -> None:
    choice = choose_processes([0.0] * 64, None, [warm(1, 0.01)], 1000.0, cores=16)
    assert choice.processes == 1 and "no warm-up streamed two chunks" in choice.reason


def test_a_schedule_holds_arrival_rate_times_duration_streams() -> None:
    arrivals = [i * 0.1 for i in range(101)]  # 101 requests over 10 s: ~10 per second
    assert open_streams(arrivals, None, 2.0) == 22  # ceil(10.1 x 2) + 1
    assert open_streams(arrivals, 5, 2.0) == 5
    assert open_streams(arrivals, None, 1000.0) == 101  # never more than the requests
    assert open_streams([0.0] * 7, None, 0.001) == 7  # a burst: every request at once


def errors(late_above: int, late_ms: float = 5.0) -> tuple[list[int], Callable[[int], Awaitable[float | None]]]:
    """A calibration stand-in: `late_ms` for more than `late_above` streams per process, 0.5 ms otherwise."""
    asked: list[int] = []

    async def error_at(streams: int) -> float | None:
        asked.append(streams)
        return late_ms if streams > late_above else 0.5

    return asked, error_at


async def test_a_burst_too_large_for_one_process_doubles_the_count_until_it_is_on_time() -> None:
    asked, error_at = errors(late_above=64)
    settled = await settle_timing(ProcessChoice(1, "auto: rate", streams=256, limit=16), error_at)
    assert settled.processes == 4 and asked == [256, 128, 64]
    assert "256 streams per process read 5.00 ms late" in settled.reason and "still" not in settled.reason


async def test_the_doubling_stops_at_the_limit_and_says_the_error_left() -> None:
    asked, error_at = errors(late_above=0)
    settled = await settle_timing(ProcessChoice(1, "auto: rate", streams=256, limit=3), error_at)
    assert settled.processes == 3 and asked == [256, 128, 86]
    assert settled.reason.endswith("still 5.00 ms at the limit")


async def test_a_count_already_on_time_is_kept_as_the_rate_chose_it() -> None:
    asked, error_at = errors(late_above=64)
    choice = ProcessChoice(4, "auto: rate", streams=256, limit=16)
    assert await settle_timing(choice, error_at) is choice and asked == [64]


class SlowReader(OpenAIClient):
    """Blocks its event loop 50 ms per request: a client that cannot keep up."""

    async def stream_chat(self, request: ChatRequest) -> ChatResult:
        time.sleep(0.05)
        return await super().stream_chat(request)


async def test_the_capacity_probe_reads_a_slow_client_as_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    import flashspark.bench.calibration as calibration

    async with Calibrator() as calibrator:
        fast = await calibrator.capacity()
        assert await calibrator.capacity() == fast  # measured once per run
        assert calibrator.result().capacity_chunks_per_s == fast
    monkeypatch.setattr(calibration, "OpenAIClient", SlowReader)
    async with Calibrator() as calibrator:
        slow = await calibrator.capacity()
    # 32 requests x 50 ms of blocked loop is at least 1.6 s for 32 x 513 chunks: at most ~10,300/s.
    bound = CAPACITY_STREAMS * (CAPACITY_TOKENS + 1) / (CAPACITY_STREAMS * 0.05)
    assert 0 < slow <= bound < fast


@pytest.mark.spawns
async def test_auto_runs_a_cell_over_the_processes_it_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flashspark.bench.autoscale as autoscale
    import flashspark.bench.calibration as calibration
    import flashspark.bench.runner as runner

    async def capacity(base_url: str) -> float:
        return 457.0  # 8 streams x ~100 chunks/s over (457 x 0.5): 3.5, so 4 for any rate from 86 to 114/s

    monkeypatch.setattr(calibration, "_capacity", capacity)
    monkeypatch.setattr(runner, "usable_cores", lambda: 16)
    monkeypatch.setattr(autoscale, "ERROR_TARGET_MS", 1000.0)  # the rate rule alone (timing: the tests above)
    with StandIn(model="m") as server:
        server.default = stream_reply([(0.01, "a")] * 6, completion_tokens=6)
        async with OpenAIClient(server.url) as client:
            writer = ResultsWriter(tmp_path / "run", meta={})
            [cell] = await run_bench(
                client,
                [CellPlan("static-c8-r0", "static", [0.0] * 8, level=8)],
                options=BenchOptions(warmup_requests=1, processes="auto"),
                writer=writer,
            )
    assert cell.processes == 4 and cell.processes_reason and "8 streams x" in cell.processes_reason
    assert sorted(r.index for r in read_requests(tmp_path / "run")) == list(range(8))
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["calibration"]["capacity_chunks_per_s"] == 457.0
    assert [p["streams"] for p in saved["calibration"]["points"]] == [2]  # 8 streams over 4 processes
    assert saved["cells"][0]["processes"] == 4
    # The client's error is calibrated at the cell's own pace (its warm-up's chunk interval, ~10 ms here).
    rate = saved["cells"][0]["stream_chunk_rate"]
    assert 70 < rate < 130 and saved["calibration"]["points"][0]["pace_ms"] == round(1000 / rate, 1)


async def test_a_calibration_point_streams_at_the_pace_it_is_asked_for() -> None:
    async with Calibrator(rounds=1) as calibrator:
        started = time.perf_counter()
        point = await calibrator.point(2, 0.05)
        elapsed = time.perf_counter() - started
        assert await calibrator.point(2, 0.05) is point and (await calibrator.point(2)).pace_ms == 20.0
    assert point.pace_ms == 50.0 and point.requests == 2 and point.failed == 0
    assert elapsed >= 8 * 0.05  # eight tokens, 50 ms apart: a stand-in that ignored the pace would take 160 ms


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "auto", "--no-calibrate"], "--processes auto needs the calibration"),
        (["--processes", "auto", "--warmup", "0"], "--processes auto needs the calibration"),
        (["--processes", "65"], "65 is outside 1-64"),
        (["--processes", "many"], "'many' is neither a number of processes nor 'auto'"),
    ],
)
def test_a_process_count_that_cannot_work_is_refused_before_anything_runs(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["bench", "static", "--base-url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2 and message in result.output
