"""`--processes auto`: enough client processes that none streams more than half of what it can,
and none holds so many streams that a burst of first tokens makes it late.

The offered chunk rate of a cell is what the server will send the client per second at the
cell's peak: the streams open at once times one stream's chunk rate. One stream's rate is read
off the cell's own warm-up requests (a lone stream is the fastest a stream gets, so this errs
towards more processes, never fewer); the streams open at once are the concurrency cap or the
request count of a static cell, and for an arrival schedule the arrival rate times a warm-up
request's duration (Little's law), within the cap. One process's capacity is the calibration's
unpaced probe (bench/calibration.py). A client process is kept at half its capacity because
its timing error rises well before its throughput stops rising (benchmarks/client_bench.py:
first-content error p99 grows from under 1 ms to tens of ms as one core saturates).

Rate is not the whole story: a static cell's streams start together, so their first tokens
arrive together, and one process reading 256 of them is ~5 ms late for the last even when its
average load is a tenth of its capacity (16-core host, 2026-12-02). So the count is then
doubled until the calibration's error at that many streams per process (the same synchronized
burst, measured) is at most ERROR_TARGET_MS, or the cores run out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flashspark.client import ChatResult

HEADROOM = 0.5
MAX_PROCESSES = 64
ERROR_TARGET_MS = 1.0  # small beside any first-token time a real engine gives


@dataclass(frozen=True)
class ProcessChoice:
    processes: int
    reason: str
    streams: int = 1
    limit: int = 1


def stream_chunk_rate(warmups: list[ChatResult]) -> tuple[float, float] | None:
    """(chunks/s of one stream, seconds one request lasted): the fastest warm-up that streamed at least two chunks."""
    best: tuple[float, float] | None = None
    for result in warmups:
        times = result.chunk_times_s
        if not result.ok or len(times) < 2 or times[-1] <= times[0]:
            continue
        rate = (len(times) - 1) / (times[-1] - times[0])
        if best is None or rate > best[0]:
            best = (rate, result.e2e_s or times[-1])
    return best


def open_streams(arrivals_s: list[float], cap: int | None, request_s: float) -> int:
    """The most streams the cell holds at once: all of a burst, or arrival rate x duration for a schedule."""
    count = len(arrivals_s)
    span = max(arrivals_s) - min(arrivals_s) if arrivals_s else 0.0
    streams = count if span <= 0 else min(count, math.ceil(count / span * request_s) + 1)
    return max(1, min(streams, cap or streams))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_processes(
    arrivals_s: list[float], cap: int | None, warmups: list[ChatResult], capacity: float, *, cores: int
) -> ProcessChoice:
    """The process count for one cell, and the arithmetic behind it (kept in results.json)."""
    measured = stream_chunk_rate(warmups)
    if measured is None:
        return ProcessChoice(1, "auto: no warm-up streamed two chunks, so no offered rate: 1 process")
    if capacity <= 0:
        return ProcessChoice(1, "auto: the calibration probe measured no capacity: 1 process")
    rate, request_s = measured
    streams = open_streams(arrivals_s, cap, request_s)
    offered = streams * rate
    wanted = math.ceil(offered / (capacity * HEADROOM))
    limit = min(cores, MAX_PROCESSES, streams)
    processes = max(1, min(wanted, limit))
    reason = (
        f"auto: {streams} streams x {rate:,.0f} chunks/s (warm-up) = {offered:,.0f} chunks/s offered; one process "
        f"takes {capacity:,.0f} chunks/s (calibration), kept under {HEADROOM:.0%}: {wanted} process(es)"
    )
    if wanted > limit:
        bound = "usable cores" if limit == cores else "streams" if limit == streams else "the maximum"
        reason += f", held to {limit} ({bound})"
    return ProcessChoice(processes, reason, streams, limit)


async def settle_timing(choice: ProcessChoice, error_at: Callable[[int], Awaitable[float | None]]) -> ProcessChoice:
    """Double the process count until the calibrated error at its streams per process is within the target."""
    processes, steps = choice.processes, []
    while True:
        error = await error_at(math.ceil(choice.streams / processes))
        if error is None or error <= ERROR_TARGET_MS or processes >= choice.limit:
            break
        steps.append(f"{math.ceil(choice.streams / processes)} streams per process read {error:.2f} ms late")
        processes = min(choice.limit, processes * 2)
    if not steps:
        return choice
    reason = f"{choice.reason}; calibration: {', '.join(steps)} (target {ERROR_TARGET_MS:g} ms): {processes}"
    if error is not None and error > ERROR_TARGET_MS:
        reason += f", still {error:.2f} ms at the limit"
    return ProcessChoice(processes, reason, choice.streams, choice.limit)
