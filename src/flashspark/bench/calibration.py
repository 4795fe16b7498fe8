"""The client's own timing error at a run's shape: a benchmark that certifies itself.

Before the measured cells, the same client (same event loop, same HTTP stack, same number
of streams per process) streams from a stand-in whose send times are known: a paced SSE
server in a child process that notes the wall-clock instant it wrote each first content
chunk. The client's first-content time minus that instant is the client's timing error at
that concurrency: what a real cell's TTFT is inflated by when the client, not the server,
is late. The stand-in runs in its own process so it neither shares the client's event loop
nor its interpreter lock (both would be blamed on the client); the wall clock is the one
every process on the machine shares.

A cell whose client error (p99) or dispatch lateness (p99) passes `BenchOptions`' bounds is
marked `client_limited` in results.json, with the reason, and the report says so.

The same stand-in also streams unpaced on request: how many chunks per second one client
process takes in as fast as it can is that process's capacity, which `--processes auto`
divides the offered chunk rate by (bench/autoscale.py). One stand-in serves a whole run;
each stream count is measured the first time a cell needs it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, OpenAIClient
from flashspark.errors import BenchError
from flashspark.percentiles import percentile

CALIBRATION_SCHEMA_VERSION = 2
PACE_S = 0.02  # a stream slow enough that any client keeps up with one: the error is the client's, not the pace's
# A cell's own pace (one stream's chunk interval at warm-up) is used when known: at 5 ms a
# stream's second token lands while a large burst of first tokens is still being read, which a
# 20 ms pace never shows. Held above MIN_PACE_S so a calibration stays a fraction of a second.
MIN_PACE_S = 0.0005
TOKENS = 8
STARTUP_TIMEOUT_S = 30.0
# The capacity probe: enough unpaced chunks that start-up is a small part of the time, few enough
# that it takes well under a second on one core.
CAPACITY_STREAMS = 32
CAPACITY_TOKENS = 512
MODELS = b'{"object":"list","data":[{"id":"calibration","object":"model"}]}'


class CalibrationPoint(BaseModel):
    """The client's first-content timing error with `streams` streams at once."""

    model_config = ConfigDict(extra="forbid")

    streams: int
    pace_ms: float = PACE_S * 1000
    requests: int
    failed: int
    error_p50_ms: float | None
    error_p99_ms: float | None
    error_max_ms: float | None


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = CALIBRATION_SCHEMA_VERSION
    method: str = (
        f"paced stand-in in a child process ({TOKENS} tokens per stream, at the cell's own chunk interval from its "
        f"warm-up, else {PACE_S * 1000:g} ms); error = client "
        "first-content time - the stand-in's send time, wall clock"
    )
    points: list[CalibrationPoint]
    capacity_chunks_per_s: float | None = Field(
        default=None,
        description=f"SSE chunks per second one client process takes in from the unpaced stand-in "
        f"({CAPACITY_STREAMS} streams x {CAPACITY_TOKENS} chunks); measured for --processes auto",
    )


# --- the stand-in (child process) ------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    data = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _serve(port_out: Any, stop: Any) -> None:
    sent: dict[str, int] = {}
    counter = 0

    async def stream(writer: asyncio.StreamWriter, rid: str, tokens: int, pace_s: float) -> None:
        prefix = b'{"id":"%s","object":"chat.completion.chunk","model":"calibration","choices":[{"index":0,' % (
            rid.encode()
        )
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(_frame(prefix + b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}'))
        await writer.drain()
        if tokens > TOKENS:  # the capacity probe: every chunk at once, as fast as the socket takes them
            chunk = _frame(prefix + b'"delta":{"content":"tok "},"finish_reason":null}]}')
            writer.write(chunk * tokens)
            await writer.drain()
        for index in range(TOKENS if tokens <= TOKENS else 0):
            await asyncio.sleep(pace_s)
            finish = b'"length"' if index == TOKENS - 1 else b"null"
            if index == 0:
                # Noted before the write: the client cannot have it earlier, so no error reads negative.
                sent[rid] = time.time_ns()
            writer.write(_frame(prefix + b'"delta":{"content":"tok "},"finish_reason":' + finish + b"}]}"))
            await writer.drain()
        usage = b'{"id":"%s","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}' % (
            rid.encode(),
            max(tokens, TOKENS),
            max(tokens, TOKENS) + 8,
        )
        writer.write(_frame(usage) + _frame(b"[DONE]") + b"0\r\n\r\n")
        await writer.drain()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if path.endswith("/chat/completions"):
                    counter += 1
                    asked = json.loads(body)
                    pace = max(MIN_PACE_S, float(asked.get("calibration_pace_s") or PACE_S))
                    await stream(writer, f"cal-{counter}", int(asked.get("max_tokens") or TOKENS), pace)
                else:  # /metrics answers the send log (the client already reads text there); the rest, a model
                    body = json.dumps(sent).encode() if path == "/metrics" else MODELS
                    if path == "/metrics":
                        sent.clear()
                    head_out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    writer.write(head_out % len(body) + body)
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:  # the stand-in stopping with keep-alive connections still open
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    port_out.put(server.sockets[0].getsockname()[1])
    async with server:
        while not stop.is_set():
            await asyncio.sleep(0.05)


def _stand_in_main(port_out: Any, stop: Any) -> None:
    # The child shares the terminal: nothing it might print at shutdown belongs in the run's output.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the process ends with it)
    try:
        import uvloop

        uvloop.run(_serve(port_out, stop))
    except ImportError:
        asyncio.run(_serve(port_out, stop))


# --- the measurement (this process) -------------------------------------------------------------


async def _measure(base_url: str, streams: int, rounds: int, pace_s: float) -> CalibrationPoint:
    async with OpenAIClient(base_url, max_connections=max(streams, 1)) as client:
        await client.open_connections(streams)
        request = ChatRequest(
            model="calibration",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=TOKENS,
            extra={"calibration_pace_s": pace_s},
        )
        seen: dict[str, float] = {}
        failed = 0
        for _ in range(rounds):
            results = await asyncio.gather(*(client.stream_chat(request) for _ in range(streams)))
            for result in results:
                if result.ok and result.request_id and result.ttfo_s is not None:
                    seen[result.request_id] = result.started_at + result.ttfo_s
                else:
                    failed += 1
        log = json.loads(await client.metrics_text())
    errors = [(seen[rid] - sent_ns / 1e9) * 1000 for rid, sent_ns in log.items() if rid in seen]
    return CalibrationPoint(
        streams=streams,
        pace_ms=pace_ms(pace_s),
        requests=len(seen) + failed,
        failed=failed,
        error_p50_ms=_round(percentile(errors, 50)),
        error_p99_ms=_round(percentile(errors, 99)),
        error_max_ms=_round(max(errors) if errors else None),
    )


def pace_ms(pace_s: float | None) -> float:
    """The pace a point is measured and kept at: a cell's own (held to MIN_PACE_S), else PACE_S; 0.1 ms steps."""
    return round(max(MIN_PACE_S, pace_s if pace_s else PACE_S) * 1000, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def _capacity(base_url: str) -> float:
    """Chunks per second this process takes in from the unpaced stand-in (the better of two rounds)."""
    async with OpenAIClient(base_url, max_connections=CAPACITY_STREAMS) as client:
        await client.open_connections(CAPACITY_STREAMS)
        request = ChatRequest(
            model="calibration", messages=[{"role": "user", "content": "x"}], max_tokens=CAPACITY_TOKENS
        )
        best = 0.0
        for _ in range(2):
            started = time.perf_counter()
            results = await asyncio.gather(*(client.stream_chat(request) for _ in range(CAPACITY_STREAMS)))
            wall = time.perf_counter() - started
            chunks = sum(len(r.chunk_times_s) for r in results if r.ok)
            best = max(best, chunks / wall if wall > 0 else 0.0)
    return round(best, 1)


class Calibrator:
    """The stand-in of one run: started on entry, stopped on exit; each stream count measured once."""

    def __init__(self, *, rounds: int = 2) -> None:
        self.rounds = rounds
        self._points: dict[tuple[int, float], CalibrationPoint] = {}
        self._capacity: float | None = None
        self._process: Any = None
        self._stop: Any = None
        self._base = ""

    async def __aenter__(self) -> Calibrator:
        context = multiprocessing.get_context("spawn")
        port_out, self._stop = context.Queue(), context.Event()
        self._process = context.Process(target=_stand_in_main, args=(port_out, self._stop), daemon=True)
        self._process.start()
        try:
            port = await asyncio.get_running_loop().run_in_executor(None, port_out.get, True, STARTUP_TIMEOUT_S)
        except Exception as exc:  # queue.Empty, or the child died
            await self.__aexit__()
            raise BenchError(
                "the calibration stand-in did not start", fix="run with --no-calibrate to skip calibration"
            ) from exc
        self._base = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()

    async def point(self, streams: int, pace_s: float | None = None) -> CalibrationPoint:
        """The error at `streams` streams paced `pace_s` apart (a cell's own pace; None: PACE_S)."""
        key = (streams, pace_ms(pace_s))
        if key not in self._points:
            self._points[key] = await _measure(self._base, streams, self.rounds, key[1] / 1000)
        return self._points[key]

    async def capacity(self) -> float:
        if self._capacity is None:
            self._capacity = await _capacity(self._base)
        return self._capacity

    def result(self) -> Calibration:
        return Calibration(points=[self._points[s] for s in sorted(self._points)], capacity_chunks_per_s=self._capacity)
