"""A cell's client-side statistics from its request records, every number worked out by hand."""

from __future__ import annotations

import pytest

from flashspark.bench.records import RequestRecord, cell_statistics, distribution, percentile


def record(index: int, **fields: object) -> RequestRecord:
    base: dict[str, object] = {
        "cell": "c",
        "category": "code",
        "index": index,
        "started_at": 0.0,
        "prompt_tokens": None,
        "output_tokens": None,
        "ttfb_s": None,
        "ttft_s": None,
        "ttfo_s": None,
        "e2e_s": None,
        "decode_tokens_per_s": None,
        "chunks": 0,
        "tokens_per_chunk": None,
        "chunk_gaps_s": [],
        "finish_reason": None,
        "error": None,
        "error_kind": None,
    }
    return RequestRecord.model_validate({**base, **fields})


def test_percentiles_interpolate_as_numpy_does() -> None:
    values = [float(v) for v in range(1, 11)]  # 1 .. 10
    assert [percentile(values, q) for q in (0, 50, 90, 99, 100)] == pytest.approx([1.0, 5.5, 9.1, 9.91, 10.0])
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0


def test_a_distribution_is_mean_p50_p90_p99_of_the_scaled_values() -> None:
    assert distribution([float(v) for v in range(1, 11)], scale=1000) == pytest.approx(
        {"mean": 5500.0, "p50": 5500.0, "p90": 9100.0, "p99": 9910.0}
    )
    assert distribution([2.0, 4.0]) == {"mean": 3.0, "p50": 3.0, "p90": pytest.approx(3.8), "p99": pytest.approx(3.98)}
    assert distribution([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_cell_statistics_count_only_the_requests_that_succeeded_and_name_the_failures() -> None:
    records = [
        record(
            0,
            prompt_tokens=10,
            output_tokens=20,
            ttft_s=0.1,
            ttfo_s=0.2,
            ttfb_s=0.05,
            e2e_s=1.0,
            decode_tokens_per_s=30.0,
            tokens_per_chunk=2.0,
            chunk_gaps_s=[0.1, 0.3],
        ),
        record(
            1,
            prompt_tokens=30,
            output_tokens=40,
            ttft_s=0.3,
            ttfo_s=0.4,
            ttfb_s=0.15,
            e2e_s=2.0,
            decode_tokens_per_s=50.0,
            tokens_per_chunk=None,
            chunk_gaps_s=[0.2],
        ),
        record(2, output_tokens=None),  # succeeded, but the server reported no usage
        record(3, error="HTTP 500", error_kind="http", e2e_s=9.0, ttft_s=5.0),
        record(4, error="?", error_kind=None),
    ]
    stats = cell_statistics(records, duration_s=4.0)
    assert (stats.completed, stats.failed, stats.error_kinds) == (3, 2, {"http": 1, "unknown": 1})
    assert (stats.total_output_tokens, stats.total_input_tokens, stats.output_throughput) == (60, 40, 15.0)
    assert stats.per_stream_decode_tokens_per_s_mean == 40.0 and stats.tokens_per_chunk_mean == 2.0
    assert stats.median_ttft_ms == pytest.approx(200.0) and stats.mean_e2el_ms == pytest.approx(1500.0)
    assert stats.median_ttfb_ms == pytest.approx(100.0) and stats.median_ttfo_ms == pytest.approx(300.0)
    assert stats.median_decode_tokens_per_s == 40.0 and stats.p99_decode_tokens_per_s == pytest.approx(49.8)
    assert stats.median_chunk_gap_ms == pytest.approx(200.0) and stats.mean_chunk_gap_ms == pytest.approx(200.0)
    assert cell_statistics(records, duration_s=0.0).output_throughput == 0.0


def test_a_cell_of_failures_has_no_latency_and_no_rate() -> None:
    stats = cell_statistics([record(0, error="reset", error_kind="reset", e2e_s=3.0)], duration_s=2.0)
    assert (stats.completed, stats.failed, stats.output_throughput) == (0, 1, 0.0)
    assert stats.mean_e2el_ms is None and stats.per_stream_decode_tokens_per_s_mean is None
    assert stats.tokens_per_chunk_mean is None


def test_a_record_keeps_every_field_of_its_result_and_derives_the_chunk_figures() -> None:
    from flashspark.bench.records import record_from
    from flashspark.client import ChatResult

    result = ChatResult(
        ok=True,
        request_id="req-1",
        prompt_tokens=12,
        completion_tokens=9,
        started_at=100.0,
        ttfb_s=0.01,
        ttft_s=0.1,
        ttfo_s=0.2,
        last_token_s=0.5,
        e2e_s=0.6,
        finish_reason="length",
        chunk_times_s=[0.1, 0.2000004, 0.5],
    )
    record = record_from(
        result, cell="c", category="agent", index=4, scheduled_s=1.5, dispatch_delay_s=0.0020004, queue_wait_s=0.0
    )
    assert record.model_dump() == {
        "cell": "c",
        "category": "agent",
        "index": 4,
        "request_id": "req-1",
        "started_at": 100.0,
        "prompt_tokens": 12,
        "output_tokens": 9,
        "ttfb_s": 0.01,
        "ttft_s": 0.1,
        "ttfo_s": 0.2,
        "e2e_s": 0.6,
        "decode_tokens_per_s": pytest.approx(8 / 0.4),
        "chunks": 3,
        "tokens_per_chunk": 3.0,
        "chunk_gaps_s": [0.1, 0.3],
        "finish_reason": "length",
        "error": None,
        "error_kind": None,
        "scheduled_s": 1.5,
        "dispatch_delay_s": 0.002,  # rounded to the microsecond, as every time in the record
        "queue_wait_s": 0.0,
    }
    failed = record_from(
        ChatResult(error="reset", error_kind="reset", chunk_times_s=[0.1]), cell="c", category="code", index=0
    )
    assert (failed.tokens_per_chunk, failed.chunks, failed.error, failed.error_kind) == (None, 1, "reset", "reset")


def test_failures_of_one_kind_are_counted_together() -> None:
    records = [record(i, error="x", error_kind="stall") for i in range(3)] + [record(3, error="y")]
    assert cell_statistics(records, 1.0).error_kinds == {"stall": 3, "unknown": 1}
