"""Benchmark definitions against a stand-in with known timings, results on disk, and a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flashspark.bench.records import RequestRecord, cell_statistics, percentile, record_from
from flashspark.bench.results import ResultsWriter, read_requests, read_results
from flashspark.bench.runner import BenchOptions, run_bench, staggered_cells, static_cells
from flashspark.client import ChatRequest, ChatResult, OpenAIClient
from flashspark.errors import BenchError
from flashspark.report.checkpoint import write_report
from flashspark.report.compare import compare_runs
from tests.standin import Reply, StandIn, stream_reply

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def static_writer(folder: Path, url: str) -> ResultsWriter:
    """A results writer for a static run against the stand-in (no recipe, no pins)."""
    meta = {"shape": "static", "base_url": url, "options": {}, "pins": {}, "boot": None, "recipe": None}
    return ResultsWriter(folder, meta=meta)


def spec_stream() -> Reply:
    # 12 tokens in 4 chunks of 1, 5, 3, 3 tokens, 0.1 s apart, after a 0.2 s first token.
    return stream_reply([(0.2, "a"), (0.1, "bbbbb"), (0.1, "ccc"), (0.1, "ddd")], completion_tokens=12)


async def test_per_token_rate_chunk_gap_and_tokens_per_chunk_are_kept_apart() -> None:
    with StandIn() as server:
        server.queue(spec_stream())
        async with OpenAIClient(server.url) as client:
            result = await client.stream_chat(ChatRequest(messages=[{"role": "user", "content": "x"}]))
    record = record_from(result, cell="c", category="code", index=0)
    assert record.output_tokens == 12 and record.chunks == 4
    assert record.tokens_per_chunk == 3.0
    assert record.ttft_s == pytest.approx(0.2, abs=0.08)
    assert [round(g, 1) for g in record.chunk_gaps_s] == [0.1, 0.1, 0.1]
    # 11 tokens after the first over ~0.3 s: ~37 tok/s per token, while chunks arrive at ~10/s.
    assert record.decode_tokens_per_s == pytest.approx(11 / 0.3, rel=0.25)


def test_failed_requests_are_counted_not_averaged() -> None:
    good = ChatResult(ok=True, completion_tokens=10, ttft_s=0.1, last_token_s=1.0, e2e_s=1.0, chunk_times_s=[0.1, 1.0])
    bad = ChatResult(ok=False, error="HTTP 500", error_kind="http", e2e_s=99.0, ttft_s=50.0)
    records = [
        record_from(good, cell="c", category="code", index=0),
        record_from(bad, cell="c", category="code", index=1),
    ]
    stats = cell_statistics(records, duration_s=2.0)
    assert (stats.completed, stats.failed, stats.error_kinds) == (1, 1, {"http": 1})
    assert stats.median_ttft_ms == pytest.approx(100.0) and stats.median_e2el_ms == pytest.approx(1000.0)
    assert stats.output_throughput == 5.0


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 90) == pytest.approx(46.0)


async def test_a_static_and_staggered_run_writes_results_and_a_report(tmp_path: Path) -> None:
    with StandIn() as server:
        server.responder = lambda body: spec_stream()
        async with OpenAIClient(server.url) as client:
            writer = static_writer(tmp_path, server.url)
            cells = static_cells((1, 2), rounds=2) + staggered_cells(3, 0.05)
            summaries = await run_bench(client, cells, options=BenchOptions(warmup_requests=1), writer=writer)
    assert [s.cell for s in summaries] == [
        "static-c1-r0",
        "static-c1-r1",
        "static-c2-r0",
        "static-c2-r1",
        "staggered-n3-g0.05",
    ]
    results = read_results(tmp_path)
    assert results.schema_version == 1 and results.schema_notes
    assert len(read_requests(tmp_path)) == 1 + 1 + 2 + 2 + 3
    assert (tmp_path / "summary.csv").read_text().splitlines()[0].startswith("cell,shape,level")
    written = write_report(tmp_path)
    assert {p.name for p in written} == {"report.md", "throughput.png", "ttft.png"}
    note = (tmp_path / "report.md").read_text()
    assert "| static-c2-r0 | 2/2 |" in note and "## Verdict" in note and "9/9 requests succeeded" in note


def test_compare_flags_deltas_inside_the_spread(tmp_path: Path) -> None:
    def run(folder: Path, values: list[float]) -> Path:
        folder.mkdir()
        cells = [{"cell": f"static-c4-r{i}", "shape": "static", "output_throughput": v} for i, v in enumerate(values)]
        (folder / "results.json").write_text(json.dumps({"cells": cells}))
        return folder

    rows = compare_runs(run(tmp_path / "a", [100.0, 110.0]), run(tmp_path / "b", [104.0, 112.0])).cells
    assert rows[0].cell == "static-c4" and rows[0].within_noise is True
    rows = compare_runs(tmp_path / "a", run(tmp_path / "c", [150.0, 152.0])).cells
    assert rows[0].within_noise is False and rows[0].delta_pct == pytest.approx(43.81, abs=0.01)


def results_of(folder: Path, values: list[float], shape: str = "static") -> Path:
    folder.mkdir()
    cells = [{"cell": f"static-c4-r{i}", "shape": shape, "output_throughput": v} for i, v in enumerate(values)]
    (folder / "results.json").write_text(json.dumps({"cells": cells}))
    return folder


@pytest.mark.parametrize(
    ("a", "b", "within"),
    [
        # spread = (104 - 100) + (109 - 107) = 6; delta = 108 - 102 = 6: at the boundary, noise.
        ([100.0, 104.0], [107.0, 109.0], True),
        # spread 6, delta 6.5: just past it, a change (a threshold twice as wide would call it noise).
        ([100.0, 104.0], [107.5, 109.5], False),
        # spread 6, delta -9: a drop past the spread.
        ([100.0, 104.0], [92.0, 94.0], False),
    ],
)
def test_the_noise_threshold_is_the_sum_of_both_runs_spreads(
    tmp_path: Path, a: list[float], b: list[float], within: bool
) -> None:
    [row] = compare_runs(results_of(tmp_path / "a", a), results_of(tmp_path / "b", b)).cells
    assert row.spread == pytest.approx(6.0) and row.within_noise is within
    assert row.a == pytest.approx(sum(a) / 2) and row.b == pytest.approx(sum(b) / 2)
    assert row.delta == pytest.approx(row.b - row.a) and row.delta_pct == pytest.approx((row.b / row.a - 1) * 100)


def test_rounds_of_a_static_cell_are_compared_as_one_cell_and_other_shapes_by_name(tmp_path: Path) -> None:
    [static] = compare_runs(results_of(tmp_path / "a", [1.0, 3.0]), results_of(tmp_path / "b", [2.0, 2.0])).cells
    assert static.cell == "static-c4" and static.a == 2.0
    rate = compare_runs(
        results_of(tmp_path / "c", [1.0, 3.0], shape="rate"), results_of(tmp_path / "d", [2.0, 5.0], shape="rate")
    ).cells
    assert [(r.cell, r.spread) for r in rate] == [("static-c4-r0", 0.0), ("static-c4-r1", 0.0)]


def test_a_cell_with_no_throughput_in_run_a_has_no_percentage(tmp_path: Path) -> None:
    comparison = compare_runs(results_of(tmp_path / "a", [0.0]), results_of(tmp_path / "b", [5.0]))
    assert (comparison.a, comparison.b) == (str(tmp_path / "a"), str(tmp_path / "b"))
    [row] = comparison.cells
    assert row.delta_pct is None and row.delta == 5.0 and row.within_noise is False


def test_a_killed_run_keeps_the_requests_that_finished(tmp_path: Path) -> None:
    with StandIn() as server:
        # Each request takes ~1 s; the run would take ~8 s.
        server.responder = lambda body: stream_reply([(0.5, "x"), (0.5, "y")], completion_tokens=2)
        out = tmp_path / "run"
        process = subprocess.Popen(
            [
                FLASHSPARK,
                "bench",
                "staggered",
                "--base-url",
                server.url,
                "--requests",
                "8",
                "--gap",
                "1.0",
                "--warmup",
                "0",
                "--out",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(read_requests(out)) < 3:
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = read_requests(out)
    assert 3 <= len(finished) < 8
    assert all(r.error is None and r.output_tokens == 2 for r in finished)
    assert not (out / "results.json").exists()  # the cell never finished; the requests are still there


@pytest.mark.spawns
async def test_a_cell_split_over_client_processes_keeps_every_request_and_its_timing(tmp_path: Path) -> None:
    with StandIn() as server:
        server.responder = lambda body: spec_stream()
        async with OpenAIClient(server.url) as client:
            writer = static_writer(tmp_path, server.url)
            options = BenchOptions(warmup_requests=0, processes=2)
            [summary] = await run_bench(client, static_cells((4,), rounds=1), options=options, writer=writer)
    records = read_requests(tmp_path)
    assert sorted(r.index for r in records) == [0, 1, 2, 3]  # each request once, from both processes
    assert all(r.error is None and r.output_tokens == 12 for r in records)
    assert all(r.request_id == "chatcmpl-standin" for r in records)  # the server's id, for its log
    assert all(r.ttft_s == pytest.approx(0.2, abs=0.1) for r in records)
    assert summary.completed == 4 and summary.output_throughput > 0
    # released together from one common start: the four ~0.5 s requests overlap instead of queueing
    starts = sorted(r.started_at for r in records)
    assert starts[-1] - starts[0] < 0.25
    # Each worker records when its requests were meant to leave and how late they did (no cap: no waits).
    assert all(r.scheduled_s == 0.0 and r.dispatch_delay_s is not None and r.queue_wait_s == 0.0 for r in records)
    assert summary.p99_dispatch_delay_ms is not None
    calibration = json.loads((tmp_path / "results.json").read_text())["calibration"]
    assert [p["streams"] for p in calibration["points"]] == [2]  # 4 streams over 2 processes: 2 each


@pytest.mark.spawns
async def test_a_client_process_that_fails_is_named_with_its_cause() -> None:
    from flashspark.bench.workers import Share, run_in_processes

    with StandIn() as server:
        # A body the worker cannot turn into a request: its process fails, and says why.
        share = Share(server.url, None, {}, {}, "static-c1-r0", None, [(0, 0.0, "code", {"messages": "not a list"})])
        with pytest.raises(BenchError) as caught:
            await run_in_processes([share], on_record=lambda record: None, timeout_s=60)
    assert "a client process failed" in str(caught.value) and "ValidationError" in str(caught.value)


async def test_a_static_cell_opens_its_connections_before_the_release(tmp_path: Path) -> None:
    with StandIn(keep_alive=True) as server:
        open_at_arrival: list[int] = []  # connections the server had accepted when each chat request came

        def reply(body: dict[str, Any]) -> Reply:
            open_at_arrival.append(server.connections)
            return stream_reply([(0.05, "x")], completion_tokens=1)

        server.responder = reply
        async with OpenAIClient(server.url) as client:
            options = BenchOptions(warmup_requests=1)
            writer = static_writer(tmp_path, server.url)
            await run_bench(client, static_cells((4,), rounds=2), options=options, writer=writer)
    records = read_requests(tmp_path)
    assert len(records) == 8 and all(r.error is None for r in records)
    # per round: the warm-up on one connection, then four measured requests that all found four open
    assert open_at_arrival == [1, 4, 4, 4, 4, 4, 4, 4, 4, 4]


def test_report_and_compare_name_a_bad_results_file_and_skip_a_torn_request_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flashspark.cli.main import main

    (tmp_path / "results.json").write_text('{"cells": [{"cell": "c1", "completed": "many"}]}')
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a FlashSpark results file" in result.output
    assert "cells.0.completed" in result.output and "Traceback" not in result.output
    (tmp_path / "results.json").write_text("{not json")
    result = CliRunner().invoke(main, ["compare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2 and "not a FlashSpark results file" in result.output
    good = RequestRecord.model_construct(
        cell="c1",
        category="code",
        index=0,
        started_at=0.0,
        prompt_tokens=1,
        output_tokens=2,
        ttfb_s=0.1,
        ttft_s=0.1,
        ttfo_s=0.1,
        e2e_s=0.2,
        decode_tokens_per_s=10.0,
        chunks=2,
        tokens_per_chunk=1.0,
        chunk_gaps_s=[0.1],
        finish_reason="length",
        error=None,
        error_kind=None,
    ).model_dump_json()
    (tmp_path / "requests.jsonl").write_text(good + "\n" + good[: len(good) // 2])  # killed mid-write
    assert [r.cell for r in read_requests(tmp_path)] == ["c1"]


def test_a_second_run_into_the_same_folder_is_refused_and_the_first_kept(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flashspark.cli.main import main

    out = tmp_path / "run"
    with StandIn() as server:
        args = ["bench", "static", "--base-url", server.url, "--concurrency", "1", "--warmup", "0", "--out", str(out)]
        first = CliRunner().invoke(main, args)
        assert first.exit_code == 0, first.output
        kept = (out / "requests.jsonl").read_text()
        second = CliRunner().invoke(main, args)
    assert second.exit_code == 2 and "already holds a benchmark run" in second.output
    assert (out / "requests.jsonl").read_text() == kept
    blocked = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "run" / "requests.jsonl" / "x")])
    assert blocked.exit_code == 2 and "Traceback" not in blocked.output
