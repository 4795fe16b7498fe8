"""A benchmark that certifies itself: the client's own timing error and each request's dispatch delay.

The calibration stand-in knows when it sent each first token; a client made late on purpose must
show it. A request that waits for the cell's concurrency cap is queueing the shape asked for; a
request the client sent late is the client's fault, and the cell says so.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from flashspark.bench.calibration import CalibrationPoint, Calibrator
from flashspark.bench.options import BenchOptions
from flashspark.bench.results import ResultsWriter, read_requests, read_results
from flashspark.bench.runner import CellPlan, certify, run_bench
from flashspark.bench.stats import CellSummary
from flashspark.client import ChatRequest, ChatResult, OpenAIClient
from tests.standin import StandIn, stream_reply


async def test_calibration_times_the_client_against_the_stand_ins_send_times() -> None:
    async with Calibrator() as calibrator:
        for streams in (4, 1, 4):
            await calibrator.point(streams)
        four = await calibrator.point(4)
        result = calibrator.result()
    assert [p.streams for p in result.points] == [1, 4]  # each distinct stream count once, in order
    for point in result.points:
        assert point.requests == 2 * point.streams and point.failed == 0
        assert point.error_p50_ms is not None and point.error_p99_ms is not None and point.error_max_ms is not None
        # Sent times are noted before the write: a first token cannot arrive before it was sent.
        assert 0 <= point.error_p50_ms <= point.error_p99_ms <= point.error_max_ms
    assert four is result.points[1]  # asked again, the point already measured


class LateClient(OpenAIClient):
    """Blocks its event loop for `block_s`, `after_s` into each request: a client too busy to read."""

    block_s = 0.08
    after_s = 0.005

    async def stream_chat(self, request: ChatRequest) -> ChatResult:
        async def hog() -> None:
            await asyncio.sleep(self.after_s)
            time.sleep(self.block_s)

        task = asyncio.create_task(hog())
        try:
            return await super().stream_chat(request)
        finally:
            await task


async def test_a_client_too_busy_to_read_shows_in_the_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    import flashspark.bench.calibration as calibration

    monkeypatch.setattr(calibration, "OpenAIClient", LateClient)
    async with Calibrator() as calibrator:
        await calibrator.point(1)
        result = calibrator.result()
    # The first token is sent 20 ms in; the client's loop is blocked from 5 ms to 85 ms: it reads it >= 60 ms late.
    assert result.points[0].error_p50_ms is not None and result.points[0].error_p50_ms >= 50


class BurstBlockingClient(OpenAIClient):
    """The first request blocks the event loop for 100 ms before it is sent: the next one leaves late."""

    blocked = False

    async def stream_chat(self, request: ChatRequest) -> ChatResult:
        if not self.blocked:
            self.blocked = True
            time.sleep(0.1)
        return await super().stream_chat(request)


async def test_a_request_sent_late_by_the_client_marks_the_cell(tmp_path: Path) -> None:
    from flashspark.report.checkpoint import markdown

    with StandIn(model="m") as server:
        server.default = stream_reply([(0.0, "abc")], completion_tokens=3)
        async with BurstBlockingClient(server.url) as client:
            writer = ResultsWriter(tmp_path / "run", meta={})
            [cell] = await run_bench(
                client,
                [CellPlan("static-c2-r0", "static", [0.0, 0.0], level=2)],
                options=BenchOptions(warmup_requests=0, calibrate=False),
                writer=writer,
            )
    late = sorted(r.dispatch_delay_s or 0 for r in read_requests(tmp_path / "run"))
    assert late[0] < 0.1 <= late[1] + 0.005  # the second waited out the first's 100 ms block
    assert cell.p99_client_lateness_ms is not None and cell.p99_client_lateness_ms >= 90
    assert len(cell.client_limited) == 1 and "fell behind the schedule" in cell.client_limited[0]
    saved = read_results(tmp_path / "run")
    assert saved.cells[0].client_limited == cell.client_limited and saved.calibration is None
    report = markdown(saved, saved.cells, [])
    assert "## Client self-check" in report and "client-limited: requests left" in report


async def test_waiting_for_the_cap_is_the_shapes_queueing_not_client_lateness(tmp_path: Path) -> None:
    with StandIn(model="m") as server:
        server.default = stream_reply([(0.2, "abc")], completion_tokens=3)  # each request ~0.2 s
        async with OpenAIClient(server.url) as client:
            writer = ResultsWriter(tmp_path / "run", meta={})
            [cell] = await run_bench(
                client,
                [CellPlan("rate-x", "rate", [0.0, 0.0, 0.0], concurrency_cap=1, level=1)],
                options=BenchOptions(warmup_requests=0, max_dispatch_lateness_ms=50),
                writer=writer,
            )
    records = sorted(read_requests(tmp_path / "run"), key=lambda r: r.queue_wait_s or 0)
    waits = [r.queue_wait_s or 0 for r in records]
    assert waits[0] < 0.05 and waits[1] > 0.15 and waits[2] > 0.35  # one at a time, ~0.2 s each
    assert all((r.dispatch_delay_s or 0) >= (r.queue_wait_s or 0) for r in records)
    assert cell.p99_queue_wait_ms is not None and cell.p99_queue_wait_ms > 350
    # 400 ms of cap waits would be far over the 50 ms bound if they were counted as the client's lateness.
    assert cell.client_limited == []
    calibration: dict[str, Any] = json.loads((tmp_path / "run" / "results.json").read_text())["calibration"]
    assert [p["streams"] for p in calibration["points"]] == [1]  # the cap: one stream at a time
    assert cell.client_error_p99_ms == calibration["points"][0]["error_p99_ms"]


@pytest.mark.parametrize(
    ("lateness_ms", "error_ms", "reasons"),
    [
        (5.0, 5.0, []),  # at the bounds: not over them
        (5.01, None, ["fell behind"]),
        (None, 5.01, ["use more --processes"]),
        (6.0, 7.0, ["use more --processes", "fell behind"]),
    ],
)
def test_a_cell_is_client_limited_only_past_its_bounds(
    lateness_ms: float | None, error_ms: float | None, reasons: list[str]
) -> None:
    cell = CellSummary(cell="c", p99_client_lateness_ms=lateness_ms)
    point = CalibrationPoint(streams=4, requests=8, failed=0, error_p50_ms=1.0, error_p99_ms=error_ms, error_max_ms=9.0)
    marked = certify(cell, BenchOptions(), point)
    assert len(marked.client_limited) == len(reasons)
    assert all(want in got for want, got in zip(reasons, marked.client_limited, strict=True))
    assert marked.client_error_p99_ms == error_ms
