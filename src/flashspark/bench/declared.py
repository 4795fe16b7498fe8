"""A declared workload (recipe/workload.py) as bench cells and options: what `tune` measures per candidate
and what `bench workload` measures against an SLO prediction, so both send the traffic the file declares."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from flashspark.bench.ladders import slo_check
from flashspark.bench.options import BenchOptions
from flashspark.bench.records import RequestRecord
from flashspark.bench.results import SloCheck, attach_slo_check, read_requests
from flashspark.bench.runner import BenchRun, CellPlan, run_bench_session
from flashspark.bench.stats import CellSummary
from flashspark.client import OpenAIClient
from flashspark.errors import InputError
from flashspark.files import read_model
from flashspark.pins import Pins
from flashspark.plan.slo import SloPrediction
from flashspark.recipe.workload import Workload


def traffic_cells(workload: Workload) -> list[CellPlan]:
    """The declared traffic as bench cells: the warm-up rounds (round < 0, kept as evidence, left out of
    the numbers: a fresh engine's first batches at a new size are slow), then one cell per measured round.
    Every round of a rate shape replays the same arrival schedule: the rounds' spread is then the
    server's, not the schedule's. The schedule is `Traffic.arrivals`, the one the SLO predictor replays."""
    traffic, settings = workload.traffic, workload.tune
    if traffic.shape == "static":
        base = f"static-c{traffic.concurrency}"
        one = CellPlan(base, "static", traffic.arrivals(), level=traffic.concurrency)
    else:
        base = f"rate-{traffic.rate:g}rps-n{traffic.requests}"
        cap = traffic.concurrency
        one = CellPlan(base, "rate", traffic.arrivals(), concurrency_cap=cap, level=cap)
    warm = [
        dataclasses.replace(one, name=f"{base}-warmup{w}", round=w - settings.warmup_rounds)
        for w in range(settings.warmup_rounds)
    ]
    return warm + [dataclasses.replace(one, name=f"{base}-r{r}", round=r) for r in range(settings.rounds)]


def declared_options(workload: Workload) -> BenchOptions:
    traffic = workload.traffic
    return BenchOptions(
        input_tokens=traffic.input_tokens,
        max_tokens=traffic.output_tokens,
        warmup_requests=workload.tune.warmup_requests,
        rounds=workload.tune.rounds + workload.tune.warmup_rounds,
    )


class WorkloadRun(BaseModel):
    """`bench workload`: the run, and the prediction beside it when one was given."""

    model_config = ConfigDict(extra="forbid")

    run: BenchRun
    slo: SloCheck | None = None


def read_prediction(path: Path) -> SloPrediction:
    """A saved SLO prediction; InputError naming the file when it is missing or not one."""
    return read_model(
        path,
        SloPrediction,
        what="a FlashSpark SLO prediction",
        key="--predicted",
        fix="write one with: flashspark plan --workload FILE --predict-slo --ladder DEPTH_RUN --ladder "
        "STATIC_RUN --save FILE",
    )


async def measure_workload(
    client: OpenAIClient,
    workload: Workload,
    *,
    run_dir: Path,
    pins: Pins,
    boot: dict[str, Any] | None,
    recipe: dict[str, Any] | None,
    prediction: SloPrediction | None = None,
    model: str | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_cell: Callable[[CellSummary], None] | None = None,
) -> WorkloadRun:
    """Bench the declared traffic (warm-up rounds, then the measured rounds); with a prediction, put it
    beside the measured rounds' requests and keep both in results.json."""
    if prediction is not None and prediction.workload.traffic != workload.traffic:
        raise InputError(
            "the prediction is for another traffic than the workload file declares",
            key="--predicted",
            fix="predict this workload: flashspark plan --workload FILE --predict-slo --ladder ... --save FILE",
        )
    run = await run_bench_session(
        client,
        traffic_cells(workload),
        shape=workload.traffic.shape,
        options=declared_options(workload).model_copy(update={"model": model}),
        run_dir=run_dir,
        pins=pins,
        boot=boot,
        recipe=recipe,
        on_record=on_record,
        on_cell=on_cell,
    )
    if prediction is None:
        return WorkloadRun(run=run)
    measured = {c.cell for c in run.cells if c.round >= 0}
    check = slo_check(prediction, [r for r in read_requests(run_dir) if r.cell in measured], recipe)
    attach_slo_check(run_dir, check)
    return WorkloadRun(run=run, slo=check)
