"""A cell's requests spread over several client processes: the way past one client core.

One Python process streams ~80-95k tokens/s on one core (benchmarks/client_bench.py);
a DGX Spark pair under an agent fleet stays far below that, but a synthetic
high-concurrency run, or a slow shared machine, can saturate it, and then the
client's own lateness shows up as server latency. With `processes > 1` each
worker process runs its own event loop and HTTP client on its share of the
arrival schedule (round-robin by request index), all anchored to one common
wall-clock start, and sends every finished request back as it completes, so
`requests.jsonl` is still appended one request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import queue as queue_module
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flashspark.bench.gc_pause import quiet_gc
from flashspark.bench.records import RequestRecord, record_from
from flashspark.client import ChatRequest, ChatResult, OpenAIClient, Timeouts
from flashspark.errors import BenchError, ClientError

READY, DONE, FAILED = "ready", "done", "failed:"
START_MARGIN_S = 0.2
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Share:
    """What one worker process runs: (index, delay from the common start, category, request)."""

    base_url: str
    api_key: str | None
    headers: dict[str, str]
    timeouts: dict[str, float]
    cell: str
    cap: int | None
    items: list[tuple[int, float, str, dict[str, Any]]]


async def send_when_due(
    client: OpenAIClient,
    request: ChatRequest,
    semaphore: asyncio.Semaphore | None,
    *,
    due: float,
    clock: Callable[[], float],
) -> tuple[ChatResult, float, float]:
    """Wait until `due` on `clock`, then send one request, inside the cell's concurrency cap when it has one.

    Returns the result, the dispatch delay (how long after `due` it was sent, cap wait included) and
    the part of it spent waiting for the cap: the rest is the client's own lateness.
    """
    await asyncio.sleep(max(0.0, due - clock()))
    late = clock() - due
    if semaphore is None:
        return await client.stream_chat(request), late, 0.0
    queued = clock()
    async with semaphore:
        waited = clock() - queued
        return await client.stream_chat(request), late + waited, waited


def split(indices: list[tuple[int, float]], processes: int) -> list[list[tuple[int, float]]]:
    """Round-robin by index: every worker sees the whole span of the schedule, not one end of it."""
    return [indices[k::processes] for k in range(processes) if indices[k::processes]]


def share_cap(cap: int | None, processes: int) -> int | None:
    return None if cap is None else max(1, math.ceil(cap / processes))


async def _run_share(share: Share, start_wall: float, out: Any) -> None:
    timeouts = Timeouts(**share.timeouts)
    semaphore = asyncio.Semaphore(share.cap) if share.cap else None
    async with OpenAIClient(
        share.base_url, api_key=share.api_key, timeouts=timeouts, max_connections=1024, headers=share.headers
    ) as client:
        with contextlib.suppress(ClientError):  # a server that refuses shows in the requests' own results
            await client.open_connections(share.cap or len(share.items))

        async def one(index: int, delay: float, category: str, body: dict[str, Any]) -> None:
            request = ChatRequest.model_validate(body)
            result, dispatch_s, waited = await send_when_due(
                client, request, semaphore, due=start_wall + delay, clock=time.time
            )
            record = record_from(
                result, cell=share.cell, category=category, index=index, scheduled_s=delay,
                dispatch_delay_s=dispatch_s, queue_wait_s=waited,
            )  # fmt: skip
            out.put(record.model_dump(mode="json"))

        await asyncio.gather(*(one(*item) for item in share.items))


def worker_main(share: Share, out: Any, go: Any, start: Any) -> None:
    """Entry point of a worker process (spawned: no event loop or sockets inherited)."""
    out.put(READY)
    go.wait()
    try:
        with quiet_gc():
            _run(share, out, start)
    except BaseException:
        # The parent names the cause instead of an exit code; the records already sent are kept.
        out.put(FAILED + traceback.format_exc(limit=8))
        raise
    out.put(DONE)


def _run(share: Share, out: Any, start: Any) -> None:
    try:
        import uvloop

        uvloop.run(_run_share(share, start.value, out))
    except ImportError:
        asyncio.run(_run_share(share, start.value, out))


async def _next(out: Any, workers: list[Any], deadline: float, phase: str) -> Any:
    """The next item from the workers' queue; a worker's failure or the deadline is an error that says so."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            item = await loop.run_in_executor(None, out.get, True, 1.0)
        except queue_module.Empty:
            dead = [w for w in workers if not w.is_alive() and w.exitcode not in (0, None)]
            if dead:
                raise BenchError(f"a client process exited with {dead[0].exitcode} before it could {phase}") from None
            if time.monotonic() > deadline:
                raise BenchError(f"the client processes did not {phase} in time") from None
            continue
        if isinstance(item, str) and item.startswith(FAILED):
            raise BenchError(f"a client process failed: {item.removeprefix(FAILED).strip()}")
        return item


async def run_in_processes(
    shares: list[Share], on_record: Any, *, timeout_s: float = 24 * 3600
) -> tuple[list[RequestRecord], float]:
    """Start one process per share, release them together, collect records as they finish.

    Returns the records and the wall-clock duration from the common start to the last finish.
    """
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    go = context.Event()
    start = context.Value("d", 0.0)
    workers = [context.Process(target=worker_main, args=(share, out, go, start), daemon=True) for share in shares]
    for worker in workers:
        worker.start()
    records: list[RequestRecord] = []
    try:
        ready = 0
        while ready < len(workers):
            if await _next(out, workers, time.monotonic() + STARTUP_TIMEOUT_S, "start") == READY:
                ready += 1
        start.value = time.time() + START_MARGIN_S
        go.set()
        done = 0
        deadline = time.monotonic() + timeout_s
        while done < len(workers):
            item = await _next(out, workers, deadline, "finish")
            if item == DONE:
                done += 1
                continue
            record = RequestRecord.model_validate(item)
            records.append(record)
            on_record(record)
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    ends = [r.started_at + r.e2e_s for r in records if r.e2e_s is not None]
    return records, (max(ends) - start.value) if ends else 0.0
