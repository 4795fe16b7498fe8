"""Load shapes and the benchmark run: static ladders, staggered arrivals, Poisson rate.

Each cell warms up first (the recipe measured a ~30 % cold penalty), then
measures; every request is salted so no two share a prefix. Around each cell
the runner snapshots `/metrics` (server-side generated tokens, speculative
counters, prefix-cache hits, preemptions) and samples the KV-cache usage
gauge while the cell runs. Each request is appended to `requests.jsonl` the
moment it finishes and `results.json` is rewritten after every cell, so a
killed run keeps everything it measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flashspark.bench.autoscale import (
    ProcessChoice,
    choose_processes,
    settle_timing,
    stream_chunk_rate,
    usable_cores,
)
from flashspark.bench.calibration import CalibrationPoint, Calibrator
from flashspark.bench.efficiency import roofline_for
from flashspark.bench.gc_pause import quiet_gc
from flashspark.bench.options import CATEGORIES, BenchOptions
from flashspark.bench.prompts import bench_messages
from flashspark.bench.records import RequestRecord, cell_statistics, record_from
from flashspark.bench.replicas import ROUTED_METRICS_NOTE, router_metrics_url, snapshot, traffic
from flashspark.bench.results import RESULTS_SCHEMA_VERSION, ResultsWriter
from flashspark.bench.stats import CellSummary, ServerStats
from flashspark.bench.tokens import Counter
from flashspark.bench.workers import Share, run_in_processes, send_when_due, share_cap, split
from flashspark.bench.workload import DatasetRow, bench_request, cell_requests, load_dataset
from flashspark.client import ChatRequest, ChatResult, OpenAIClient, parse_metrics
from flashspark.client.metrics import GENERATION_TOKENS, KV_USAGE, PREEMPTIONS, MetricsSnapshot, gauge_sum
from flashspark.errors import ClientError, FlashsparkError, InputError
from flashspark.files import write_json
from flashspark.pins import Pins
from flashspark.recipe import Recipe
from flashspark.recipe.workload import poisson_arrivals

SAMPLE_S = 0.5
MAX_CALIBRATION_STREAMS = 1024
COLD_HIT_WARNING = 0.05


@dataclass
class CellPlan:
    """One measured cell: a name, its arrival schedule (seconds from cell start) and a concurrency cap."""

    name: str
    shape: str
    arrivals_s: list[float]
    concurrency_cap: int | None = None
    level: int | None = None
    round: int = 0


def static_cells(levels: tuple[int, ...], rounds: int) -> list[CellPlan]:
    return [
        CellPlan(f"static-c{level}-r{r}", "static", [0.0] * level, level=level, round=r)
        for level in levels
        for r in range(rounds)
    ]


def staggered_cells(count: int, gap_s: float) -> list[CellPlan]:
    return [CellPlan(f"staggered-n{count}-g{gap_s:g}", "staggered", [i * gap_s for i in range(count)], level=count)]


def rate_cells(rate: float, count: int, cap: int | None, seed: int) -> list[CellPlan]:
    arrivals = poisson_arrivals(rate, count, seed)
    return [CellPlan(f"rate-{rate:g}rps-n{count}", "rate", arrivals, concurrency_cap=cap, level=cap)]


class MetricsSampler:
    """Polls /metrics during a cell for the KV-usage peak."""

    def __init__(self, client: OpenAIClient, *, enabled: bool = True) -> None:
        self.client = client
        self.enabled = enabled
        self.kv_peak: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MetricsSampler:
        if self.enabled:
            self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # It shares the event loop that times the streams: the first sample waits for the cell's
        # release burst to pass, and each reads one gauge instead of parsing the whole exposition.
        while True:
            await asyncio.sleep(SAMPLE_S)
            try:
                value = gauge_sum(await self.client.metrics_text(), KV_USAGE)
            except (ClientError, ValueError):
                continue
            if value is not None:
                self.kv_peak = value if self.kv_peak is None else max(self.kv_peak, value)


async def _snapshot(client: OpenAIClient) -> MetricsSnapshot | None:
    try:
        return parse_metrics(await client.metrics_text())
    except (ClientError, ValueError):
        return None


def request_for(category: str, *, model: str, options: BenchOptions, run: str, index: int) -> ChatRequest:
    """The request of one built-in category prompt (see `bench.workload` for every source)."""
    return bench_request(bench_messages(category, run=run, index=index), model, options, None)


async def run_cell(
    client: OpenAIClient,
    cell: CellPlan,
    *,
    model: str,
    options: BenchOptions,
    run: str,
    on_record: Callable[[RequestRecord], None],
    dataset: list[DatasetRow] | None = None,
    tokenizer: Counter | None = None,
    pick: Callable[[list[ChatResult]], Awaitable[ProcessChoice]] | None = None,
    server_metrics: bool = True,
) -> CellSummary:
    """Warm up, then run one cell; returns its summary (client and server side; the server side only
    with `server_metrics`).

    A failed warm-up stops the run: the cell would measure a server that is not serving (and,
    against one that stalls, wait a stall timeout per request to say so). `pick` chooses the
    client processes from the warm-up results (`--processes auto`); without it, the options' count.
    """
    warmups = await cell_requests(
        client, options.warmup_requests * len(options.categories), model=model, options=options, run=f"{run}w",
        dataset=dataset, tokenizer=tokenizer,
    )  # fmt: skip
    warm_results: list[ChatResult] = []
    for _, warmup in warmups:
        result = await client.stream_chat(warmup)
        warm_results.append(result)
        if not result.ok:
            raise ClientError(
                f"a warm-up request of cell {cell.name} failed ({result.error_kind}): {result.error}",
                where=client.api,
                fix="check the server (`flashspark status`, `flashspark smoke`); nothing of this cell was measured",
            )
    choice = await pick(warm_results) if pick else ProcessChoice(int(options.processes), "")
    processes = choice.processes
    records: list[RequestRecord] = []
    semaphore = asyncio.Semaphore(cell.concurrency_cap) if cell.concurrency_cap else None
    # Everything a request needs is made before the release, connections included: the measured
    # burst then costs one write per request, and TCP set-up is not timed as first-token latency.
    built = await cell_requests(
        client, len(cell.arrivals_s), model=model, options=options, run=f"{run}{cell.name}", dataset=dataset,
        tokenizer=tokenizer,
    )  # fmt: skip
    categories = [category for category, _ in built]
    requests = [request for _, request in built]
    if processes == 1:
        with contextlib.suppress(ClientError):  # a server that refuses shows in the requests' own results
            await client.open_connections(cell.concurrency_cap or len(cell.arrivals_s))
    before = await _snapshot(client) if server_metrics else None
    started = time.perf_counter()

    async def one(index: int, delay: float) -> None:
        result, dispatch_s, waited = await send_when_due(
            client, requests[index], semaphore, due=started + delay, clock=time.perf_counter
        )
        record = record_from(
            result, cell=cell.name, category=categories[index], index=index, scheduled_s=delay,
            dispatch_delay_s=dispatch_s, queue_wait_s=waited,
        )  # fmt: skip
        records.append(record)
        on_record(record)

    async with MetricsSampler(client, enabled=server_metrics) as sampler, contextlib.AsyncExitStack() as stack:
        stack.enter_context(quiet_gc())
        if processes > 1:
            shares = shares_for(client, cell, built, processes)
            records, duration = await run_in_processes(shares, on_record=on_record)
        else:
            await asyncio.gather(*(one(i, delay) for i, delay in enumerate(cell.arrivals_s)))
            duration = time.perf_counter() - started
    after = await _snapshot(client) if server_metrics else None
    meta = {
        "cell": cell.name,
        "shape": cell.shape,
        "level": cell.level,
        "round": cell.round,
        "requests": len(cell.arrivals_s),
        "concurrency_cap": cell.concurrency_cap,
        "processes": processes,
        "processes_reason": choice.reason or None,
        # Kept as measured: the calibration point auto chose from is found again from it, at the same pace.
        "stream_chunk_rate": measured[0] if (measured := stream_chunk_rate(warm_results)) else None,
    }
    per_category = {
        category: cell_statistics([r for r in records if r.category == category], duration)
        for category in sorted({r.category for r in records})
    }
    server = server_side(before, after, duration, sampler.kv_peak)
    return CellSummary.of(meta, cell_statistics(records, duration), per_category, server)


def shares_for(
    client: OpenAIClient, cell: CellPlan, built: list[tuple[str, ChatRequest]], processes: int
) -> list[Share]:
    """The cell's schedule and its built requests split round-robin over `processes` client processes."""
    parts = split(list(enumerate(cell.arrivals_s)), processes)
    shares = []
    for part in parts:
        items = [(index, delay, built[index][0], built[index][1].model_dump()) for index, delay in part]
        shares.append(
            Share(
                base_url=client.api,
                api_key=client.api_key,
                headers=client.extra_headers,
                timeouts=client.timeouts.model_dump(),
                cell=cell.name,
                cap=share_cap(cell.concurrency_cap, len(parts)),
                items=items,
            )
        )
    return shares


def server_side(
    before: MetricsSnapshot | None, after: MetricsSnapshot | None, duration: float, kv_peak: float | None
) -> ServerStats:
    if before is None or after is None:
        return ServerStats()
    delta = after.minus(before)
    spec = delta.spec_decode
    # Sampled during the cell, and once right after it (a cell shorter than one sample period has only that).
    kv_samples = [v for v in (kv_peak, after.gauges.get(KV_USAGE)) if v is not None]
    hit_rate = delta.prefix_cache_hit_rate
    warnings = []
    if hit_rate is not None and hit_rate > COLD_HIT_WARNING:
        warnings.append(
            f"{hit_rate:.0%} of prefix-cache queries hit during a cold cell: the result may be flattered by caching"
        )
    return ServerStats(
        server_metrics=True,
        server_output_throughput=delta.counter(GENERATION_TOKENS) / duration if duration > 0 else None,
        server_generation_tokens=delta.counter(GENERATION_TOKENS),
        spec_decode_num_drafts=spec.drafts,
        spec_decode_draft_tokens=spec.draft_tokens,
        spec_decode_accepted_tokens=spec.accepted_tokens,
        spec_decode_acceptance_rate=spec.acceptance_rate,
        spec_decode_acceptance_length=spec.mean_acceptance_length,
        spec_decode_per_position_acceptance_rates=spec.per_position_rates,
        prefix_cache_hit_rate=hit_rate,
        kv_cache_usage_peak=max(kv_samples) if kv_samples else None,
        num_preemptions=delta.counter(PREEMPTIONS),
        warnings=warnings,
    )


async def run_bench(
    client: OpenAIClient,
    cells: list[CellPlan],
    *,
    options: BenchOptions,
    writer: ResultsWriter,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_cell: Callable[[CellSummary], None] | None = None,
    tokenizer: Counter | None = None,
    server_metrics: bool = True,
) -> list[CellSummary]:
    """Run every cell in order, writing as it goes; returns the cell summaries."""
    if not options.categories:
        raise InputError("no prompt category given", key="--categories", fix=f"use {', '.join(CATEGORIES)}")
    for category in options.categories:
        if category not in CATEGORIES:
            raise InputError(
                f"unknown category {category!r}", key="--categories", value=category, fix=f"use {', '.join(CATEGORIES)}"
            )
    dataset = load_dataset(Path(options.dataset)) if options.dataset else None
    model = options.model or await client.default_model()
    run = uuid.uuid4().hex[:8]
    summaries: list[CellSummary] = []

    def record(rec: RequestRecord) -> None:
        writer.append_request(rec)
        if on_record is not None:
            on_record(rec)

    async with contextlib.AsyncExitStack() as stack:
        calibrator = await stack.enter_async_context(Calibrator()) if options.calibrate else None
        for cell in cells:
            pick = auto_picker(cell, calibrator) if options.processes == "auto" and calibrator else None
            summary = await run_cell(
                client,
                cell,
                model=model,
                options=options,
                run=run,
                on_record=record,
                dataset=dataset,
                pick=pick,
                server_metrics=server_metrics,
                tokenizer=tokenizer,
            )
            point = None
            if calibrator is not None:
                pace = 1 / summary.stream_chunk_rate if summary.stream_chunk_rate else None
                point = await calibrator.point(streams_per_process(cell, summary.processes), pace)
                writer.meta["calibration"] = calibrator.result().model_dump(mode="json")
            summary = certify(summary, options, point)
            summaries.append(summary)
            writer.write_results(summaries, model=model)
            if on_cell is not None:
                on_cell(summary)
            if server_gone(summary):
                raise ClientError(
                    f"every request of cell {summary.cell} failed ({summary.error_kinds}): the server stopped "
                    "answering",
                    where=str(writer.results_path),
                    fix="the cells measured so far are kept there; check the server, then run the bench again",
                )
    return summaries


def auto_picker(cell: CellPlan, calibrator: Calibrator) -> Callable[[list[ChatResult]], Awaitable[ProcessChoice]]:
    async def pick(warmups: list[ChatResult]) -> ProcessChoice:
        capacity = await calibrator.capacity()
        choice = choose_processes(cell.arrivals_s, cell.concurrency_cap, warmups, capacity, cores=usable_cores())
        measured = stream_chunk_rate(warmups)
        pace = 1 / measured[0] if measured else None

        async def error_at(streams: int) -> float | None:
            return (await calibrator.point(min(streams, MAX_CALIBRATION_STREAMS), pace)).error_p99_ms

        return await settle_timing(choice, error_at)

    return pick


def streams_per_process(cell: CellPlan, processes: int) -> int:
    """The streams one client process holds at once in this cell (at most, for a rate cell without a cap)."""
    streams = cell.concurrency_cap or len(cell.arrivals_s)
    return max(1, min(MAX_CALIBRATION_STREAMS, -(-streams // processes)))


def certify(summary: CellSummary, options: BenchOptions, point: CalibrationPoint | None) -> CellSummary:
    """The cell with the client's own error beside it, marked when the client may have set the numbers."""
    reasons = []
    error = point.error_p99_ms if point else None
    if error is not None and error > options.max_client_error_ms:
        reasons.append(
            f"client timing error p99 {error:.1f} ms at {point.streams if point else 0} streams per process "
            f"(calibration) is over {options.max_client_error_ms:g} ms: use more --processes"
        )
    lateness = summary.p99_client_lateness_ms
    if lateness is not None and lateness > options.max_dispatch_lateness_ms:
        reasons.append(
            f"requests left {lateness:.1f} ms (p99) after their scheduled time, over "
            f"{options.max_dispatch_lateness_ms:g} ms: the client fell behind the schedule (coordinated omission)"
        )
    return summary.model_copy(update={"client_error_p99_ms": error, "client_limited": reasons})


# Failures that say the server is not answering at all (not that it answered badly).
GONE_KINDS = frozenset({"connect", "timeout", "stall", "reset"})


def server_gone(summary: CellSummary) -> bool:
    """True when no request of the cell completed and every failure was the server not answering."""
    kinds = summary.error_kinds
    return summary.completed == 0 and summary.failed > 0 and bool(kinds) and set(kinds) <= GONE_KINDS


class BenchRun(BaseModel):
    """One `flashspark bench` run: where its evidence is and what each cell measured."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = RESULTS_SCHEMA_VERSION
    run_dir: str
    results: str
    requests: str
    summary: str
    cells: list[CellSummary]

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.cells)


def run_roofline(
    recipe: dict[str, Any] | None, boot: dict[str, Any] | None, cells: list[CellPlan]
) -> tuple[dict[str, Any] | None, str | None]:
    """The roofline of the served deployment (measured before the cells, while the engine idles), or why none."""
    if recipe is None:
        return None, "no recipe describes the server (--base-url): its bytes per step are unknown"
    try:
        typed = Recipe.model_validate(recipe)
    except ValidationError:
        return None, "the recipe given does not validate: no roofline"
    levels = sorted({cell.concurrency_cap or len(cell.arrivals_s) for cell in cells} | {1})
    try:
        roofline, why = roofline_for(typed, boot, levels)
    except (FlashsparkError, OSError, ValueError, KeyError) as exc:
        return None, f"the roofline could not be sized: {exc}"
    return (roofline.model_dump(mode="json") if roofline else None), (why or None)


async def run_bench_session(
    client: OpenAIClient,
    cells: list[CellPlan],
    *,
    shape: str,
    options: BenchOptions,
    run_dir: Path,
    pins: Pins,
    boot: dict[str, Any] | None,
    recipe: dict[str, Any] | None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_cell: Callable[[CellSummary], None] | None = None,
    tokenizer: Counter | None = None,
) -> BenchRun:
    """A whole benchmark run: results.json carries the options, the pins, the boot evidence and the recipe."""
    meta: dict[str, Any] = {
        "shape": shape,
        "base_url": client.api,
        "options": options.model_dump(mode="json"),
        "pins": pins.merged(vllm_version=await client.version()).model_dump(mode="json", exclude_defaults=True),
        "boot": boot,
        "recipe": recipe,
    }
    meta["roofline"], meta["roofline_note"] = await asyncio.to_thread(run_roofline, recipe, boot, cells)
    writer = ResultsWriter(run_dir, meta=meta)
    metrics_url = router_metrics_url(boot)
    if metrics_url:
        # Through the router, /metrics is whichever replica answers: a before/after of two replicas is no
        # delta. The per-replica traffic comes from the router's own counters instead.
        meta["server_metrics_note"] = ROUTED_METRICS_NOTE
    before = await snapshot(metrics_url) if metrics_url else None
    summaries = await run_bench(
        client,
        cells,
        options=options,
        writer=writer,
        on_record=on_record,
        on_cell=on_cell,
        tokenizer=tokenizer,
        server_metrics=metrics_url is None,
    )
    after = await snapshot(metrics_url) if metrics_url else None
    if before is not None and after is not None and writer.results_path.exists():
        document = json.loads(writer.results_path.read_text())
        document["replicas"] = [row.model_dump(mode="json") for row in traffic(before, after)]
        write_json(writer.results_path, document)
    return BenchRun(
        run_dir=str(run_dir),
        results=str(writer.results_path),
        requests=str(writer.requests_path),
        summary=str(writer.summary_path),
        cells=summaries,
    )
