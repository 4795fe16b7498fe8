"""The benchmark's run directory: requests.jsonl as requests finish, results.json and summary.csv per cell.

`results.json` is versioned and carries what produced the numbers: the
resolved recipe (when known), the pin set (vLLM version, model, image digest,
boot evidence when FlashSpark launched the deployment) and the options.
Fields follow `vllm bench serve` where the meaning is the same; SCHEMA_NOTES
says where it is not.
"""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flashspark.bench.efficiency import Roofline
from flashspark.bench.records import RequestRecord
from flashspark.bench.replicas import ReplicaTraffic
from flashspark.bench.stats import CellSummary
from flashspark.errors import InputError
from flashspark.files import append_line, read_model, write_atomic, write_json
from flashspark.pins import Pins
from flashspark.plan.slo import SloPrediction

RESULTS_SCHEMA_VERSION = 1
SCHEMA_NOTES = {
    "ttft": "first token of any kind (reasoning included); vllm bench serve stops at the first chunk, "
    "which may be an empty role chunk",
    "ttfo": "first answer (content) token; not in vllm bench serve",
    "decode_tokens_per_s": "(N - 1) / (t_last - t_first) per request, per token; vllm bench serve has no "
    "equivalent (its TPOT is (E2EL - TTFT) / (N - 1))",
    "chunk_gap_ms": "gap between SSE chunks that carried tokens: what vllm bench serve calls ITL",
    "output_throughput": "client side: sum of usage.completion_tokens / cell duration (as vllm bench serve)",
    "server_output_throughput": "delta of vllm:generation_tokens_total / cell duration",
    "spec_decode_*": "deltas of /metrics counters over the cell, as vllm bench serve computes them",
    "dispatch_delay_ms": "actual send - scheduled send per request; queue_wait is the part spent waiting for "
    "the concurrency cap, client_lateness the rest; vllm bench serve does not record it",
    "client_limited": "why the client, not the server, may have set a cell's numbers (calibrated error or "
    "lateness over the bounds in options)",
}
SUMMARY_COLUMNS = (
    "cell",
    "shape",
    "level",
    "round",
    "requests",
    "completed",
    "failed",
    "duration",
    "output_throughput",
    "server_output_throughput",
    "per_stream_decode_tokens_per_s_mean",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_ttfo_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
    "median_chunk_gap_ms",
    "tokens_per_chunk_mean",
    "spec_decode_acceptance_rate",
    "spec_decode_acceptance_length",
    "prefix_cache_hit_rate",
    "kv_cache_usage_peak",
    "num_preemptions",
    "p99_dispatch_delay_ms",
    "p99_client_lateness_ms",
    "client_error_p99_ms",
    "client_limited",
)


class ResultsWriter:
    def __init__(self, run_dir: Path, *, meta: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.meta = meta
        self.requests_path = run_dir / "requests.jsonl"
        self.results_path = run_dir / "results.json"
        self.summary_path = run_dir / "summary.csv"
        # One run per directory: appending a second run's requests to the first's would make one
        # report of two runs, and nothing in the lines would tell them apart.
        if self.requests_path.exists() or self.results_path.exists():
            raise InputError(
                f"{run_dir} already holds a benchmark run",
                key="--out",
                value=str(run_dir),
                where=str(run_dir),
                fix="pick a new --out folder, or leave --out unset for a new run directory",
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create the run directory {run_dir}: {exc.strerror}",
                key="--out",
                value=str(run_dir),
                fix="pick a folder you can write to",
            ) from None
        self.created_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._requests: TextIO | None = None

    def append_request(self, record: RequestRecord) -> None:
        # One line handed to the OS as each request finishes: a killed process keeps it. No fsync
        # and no open per line: this runs on the event loop that times the other streams, and an
        # fsync took 0.3 ms (p50) to 4 ms (p99) on this disk; the cell's end syncs (write_results).
        if self._requests is None:
            self._requests = open(self.requests_path, "a", encoding="utf-8")  # noqa: SIM115 (closed per cell)
        append_line(self._requests, record.model_dump_json())
        self._requests.flush()

    def _sync_requests(self) -> None:
        if self._requests is not None:
            os.fsync(self._requests.fileno())
            self._requests.close()
            self._requests = None

    def write_results(self, cells: list[CellSummary], *, model: str) -> None:
        self._sync_requests()
        rows = [cell.model_dump(mode="json") for cell in cells]
        document = {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "created_at": self.created_at,
            "model": model,
            **self.meta,
            "schema_notes": SCHEMA_NOTES,
            "cells": rows,
        }
        write_json(self.results_path, document)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell_text(row.get(k)) for k in SUMMARY_COLUMNS})
        write_atomic(self.summary_path, buffer.getvalue())


def _cell_text(value: Any) -> Any:
    return "; ".join(str(v) for v in value) if isinstance(value, list) else value


#: The error the SLO predictor is held to (the report marks each number against it).
TARGET_ERROR = 0.15


class SloNumber(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    predicted: float
    measured: float | None
    error: float | None = Field(description="(predicted - measured) / measured; None when nothing was measured.")
    within_target: bool | None


class SloCheck(BaseModel):
    """A prediction beside the measurement of the same traffic (kept in the run's results.json)."""

    model_config = ConfigDict(extra="forbid")

    prediction: SloPrediction
    target_error: float = TARGET_ERROR
    numbers: list[SloNumber]
    measured_requests: int
    warnings: list[str] = Field(default_factory=list)


class BenchResults(BaseModel):
    """results.json as read back: what produced the numbers, and every cell."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = RESULTS_SCHEMA_VERSION
    created_at: str | None = None
    model: str | None = None
    shape: str = "bench"
    base_url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    pins: Pins = Field(default_factory=Pins)
    boot: dict[str, Any] | None = Field(
        default=None, description="The deployment's boot.json, when FlashSpark started it."
    )
    recipe: dict[str, Any] | None = Field(
        default=None, description="The resolved recipe, when it describes the server."
    )
    calibration: dict[str, Any] | None = Field(
        default=None, description="The client's own timing error per stream count (bench/calibration.py)."
    )
    roofline: Roofline | None = Field(
        default=None, description="Bytes per decode step and the bandwidth they are read at (bench/efficiency.py)."
    )
    roofline_note: str | None = Field(default=None, description="Why there is no roofline, when there is none.")
    schema_notes: dict[str, str] = Field(default_factory=dict)
    cells: list[CellSummary] = Field(default_factory=list)
    server_metrics_note: str | None = Field(default=None, description="Why server-side counters were not read.")
    replicas: list[ReplicaTraffic] | None = Field(
        default=None, description="Through vLLM's router: requests per replica and its rotation (bench/replicas.py)."
    )
    slo: SloCheck | None = Field(
        default=None, description="`bench workload --predicted`: the prediction beside what this run measured."
    )


def read_results(run_dir: Path) -> BenchResults:
    """results.json of a run directory; InputError naming the file when it is missing or not one."""
    return read_model(
        run_dir / "results.json",
        BenchResults,
        what="a FlashSpark results file",
        fix="point at a run directory written by `flashspark bench` (and do not edit results.json)",
    )


def attach_slo_check(run_dir: Path, check: SloCheck) -> None:
    """Add the prediction-beside-measurement to a finished run's results.json (rewritten atomically)."""
    document = read_results(run_dir)
    document.slo = check
    write_json(run_dir / "results.json", document.model_dump(mode="json"))


def read_requests(run_dir: Path) -> list[RequestRecord]:
    """Every request record of requests.jsonl; a torn line (a killed run's last) is skipped."""
    path = run_dir / "requests.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.append(RequestRecord.model_validate_json(line))
        except ValidationError:
            continue
    return records
