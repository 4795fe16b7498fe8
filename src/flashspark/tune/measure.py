"""One candidate measured: a fresh deployment through the normal lifecycle, a short bench of the declared
traffic, and the deployment stopped again whatever happened."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flashspark.bench.declared import measure_workload
from flashspark.bench.results import read_requests
from flashspark.cluster.events import Events
from flashspark.cluster.lifecycle import down, up
from flashspark.cluster.targets import resolve_target
from flashspark.errors import ClusterError, EngineError
from flashspark.percentiles import percentile
from flashspark.recipe.model import Recipe
from flashspark.recipe.workload import Workload
from flashspark.redact import redact
from flashspark.tune.candidates import Candidate

RESULT_SCHEMA_VERSION = 1
#: The metrics a round yields (the objective and the constraints name them).
METRICS = ("output_tokens_per_s", "per_stream_decode_tokens_per_s", "p95_ttft_s")


class RoundMetrics(BaseModel):
    """One measured round (one bench cell) of a candidate."""

    model_config = ConfigDict(extra="forbid")

    round: int
    cell: str
    requests: int
    failed: int
    output_tokens_per_s: float
    per_stream_decode_tokens_per_s: float | None
    p95_ttft_s: float | None
    client_limited: list[str] = Field(default_factory=list)


class CandidateResult(BaseModel):
    """What one candidate's boot and bench left: the evidence a recommendation stands on."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = RESULT_SCHEMA_VERSION
    candidate: Candidate
    status: Literal["measured", "failed"]
    error: str | None = None
    boot_s: float | None = None
    kv_cache_tokens: int | None = Field(default=None, description="The pool the boot logged.")
    max_concurrency: float | None = None
    rounds: list[RoundMetrics] = Field(default_factory=list)
    evidence: str = Field(description="The candidate's folder: boot.json, bench results, requests.")
    seconds: float = 0.0

    def values(self, metric: str) -> list[float]:
        """The metric's value in every round that measured it."""
        found = (getattr(r, metric) for r in self.rounds)
        return [float(v) for v in found if v is not None]


async def measure(
    candidate: Candidate, recipe: Recipe, workload: Workload, folder: Path, events: Events
) -> CandidateResult:
    """Boot `recipe`, bench the traffic, stop it. A boot that fails is a result (status failed, with the
    reason); an interruption stops the deployment and propagates."""
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)

    def result(**fields: object) -> CandidateResult:
        return CandidateResult.model_validate(
            {"candidate": candidate, "evidence": str(folder), "seconds": round(time.monotonic() - started, 1), **fields}
        )

    try:
        booted = await up(recipe, events=events)
    except (ClusterError, EngineError) as error:
        return result(status="failed", error=redact(error.describe(), recipe.secret_values()))
    try:
        shutil.copyfile(booted.boot_json, folder / "boot.json")
        target = resolve_target(recipe, base_url=None, explicit_recipe=True)
        async with target.client() as client:
            measured = await measure_workload(
                client,
                workload,
                run_dir=folder / "bench",
                pins=target.pins,
                boot=target.boot,
                recipe=recipe.public_dict(),
            )
    finally:
        await down(recipe, events=events)
    requests = read_requests(folder / "bench")
    rounds = []
    for cell in (c for c in measured.run.cells if c.round >= 0):
        ttfts = [r.ttft_s for r in requests if r.cell == cell.cell and r.error is None and r.ttft_s is not None]
        rounds.append(
            RoundMetrics(
                round=cell.round,
                cell=cell.cell,
                requests=cell.requests,
                failed=cell.failed,
                output_tokens_per_s=round(cell.output_throughput, 3),
                per_stream_decode_tokens_per_s=cell.per_stream_decode_tokens_per_s_mean,
                p95_ttft_s=percentile(ttfts, 95),
                client_limited=cell.client_limited,
            )
        )
    return result(
        status="measured",
        boot_s=booted.boot_s,
        kv_cache_tokens=booted.boot.kv_cache_tokens,
        max_concurrency=booted.boot.max_concurrency,
        rounds=rounds,
    )
