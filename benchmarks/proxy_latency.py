"""What does `flashspark record` add to every streamed chunk? Measured from outside, direct against proxied.

An upstream stand-in (this file with --serve, its own process) streams paced SSE chat chunks, each
carrying the moment it was written (time.perf_counter_ns: CLOCK_MONOTONIC, one clock for every
process on the machine). A reader in this process opens S streams at once, directly and then
through a real `flashspark record` process, and takes each chunk's arrival minus its send time.
The proxy's added latency is the proxied distribution minus the direct one, percentile by
percentile; the proxy's own per-chunk measure (upstream read to harness write, record.json) is
printed beside it. Target (issue 15): added p99 under 1 ms at 16 streams on this machine.

    python benchmarks/proxy_latency.py [--streams 1,16] [--chunks 200] [--pace-ms 20]

A number printed here is a measurement of this run on this machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from client_bench import free_port, pct

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


try:
    from uvloop import run as run_loop  # the proxy runs on uvloop; so do the upstream and the reader
except ImportError:
    from asyncio import run as run_loop


# --- the upstream ---------------------------------------------------------------------

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
DONE = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":%d}}\n\ndata: [DONE]\n\n'


async def serve(port: int, chunks: int, pace_s: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
                await reader.readexactly(length)
                writer.write(HEAD)
                for index in range(chunks):
                    await asyncio.sleep(pace_s)
                    payload = json.dumps(
                        {
                            "id": "bench",
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
                            "sent_ns": time.perf_counter_ns(),
                            "n": index,
                        }
                    ).encode()
                    data = b"data: " + payload + b"\n\n"
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                done = DONE % chunks
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# --- the reader -----------------------------------------------------------------------


async def one_stream(port: int) -> list[float]:
    """Arrival minus send time (µs) for every chunk of one streamed request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"stream":true}'
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    latencies: list[float] = []
    buffer = b""
    done = False
    while not done:
        data = await reader.read(65536)
        now = time.perf_counter_ns()
        if not data:
            break
        buffer += data
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            done = done or b"[DONE]" in event
            start = event.find(b"data: {")
            if start < 0 or b"sent_ns" not in event:
                continue
            sent = json.loads(event[start + 6 :])["sent_ns"]
            latencies.append((now - sent) / 1000)
    writer.close()
    return latencies


async def measure(port: int, streams: int) -> list[float]:
    results = await asyncio.gather(*(one_stream(port) for _ in range(streams)))
    return [value for stream in results for value in stream]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,16")
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--no-pin", action="store_true", help="Do not give the proxy a core of its own.")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        run_loop(serve(args.serve, args.chunks, args.pace_ms / 1000))
        return
    upstream_port, proxy_port = free_port(), free_port()
    # The proxy gets a core of its own, as it would beside a harness; upstream and reader share the other.
    pinned = len(os.sched_getaffinity(0)) >= 2 and not args.no_pin
    cores = sorted(os.sched_getaffinity(0))
    if pinned:
        os.sched_setaffinity(0, {cores[0]})  # inherited by the upstream started next
    proxy_pin = ["taskset", "-c", str(cores[1])] if pinned else []
    shape = ["--chunks", str(args.chunks), "--pace-ms", str(args.pace_ms)]
    upstream = subprocess.Popen([sys.executable, __file__, "--serve", str(upstream_port), *shape])
    out = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    env = {**os.environ, "FLASHSPARK_HOME": str(out / "home")}
    proxy = subprocess.Popen(
        [*proxy_pin, FLASHSPARK, "record", "--upstream", f"http://127.0.0.1:{upstream_port}/v1", "--listen",
         f"127.0.0.1:{proxy_port}", "--out", str(out / "rec"), "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(upstream_port)
        wait_port(proxy_port)
        print(f"{'streams':>7} {'direct p50':>10} {'p99':>7} {'proxied p50':>11} {'p99':>7} "
              f"{'added p50':>9} {'p99':>7} {'proxy own p50':>13} {'p99':>7}   (µs, {args.chunks} chunks a stream, "
              f"{args.pace_ms:g} ms apart; proxy {'on a core of its own' if pinned else 'unpinned'})")  # fmt: skip
        for streams in (int(s) for s in args.streams.split(",")):
            run_loop(measure(upstream_port, 1))  # warm both paths: imports, first connections
            run_loop(measure(proxy_port, 1))
            direct = run_loop(measure(upstream_port, streams))
            proxied = run_loop(measure(proxy_port, streams))
            time.sleep(0.5)
            own = [
                json.loads(line)["added_latency"]
                for line in (out / "rec" / "exchanges.jsonl").read_text().splitlines()[-streams:]
            ]
            own_p50 = sorted(o["p50_us"] for o in own)[len(own) // 2]
            own_p99 = max(o["p99_us"] for o in own)
            print(
                f"{streams:>7} {pct(direct, 50):>10.0f} {pct(direct, 99):>7.0f} {pct(proxied, 50):>11.0f} "
                f"{pct(proxied, 99):>7.0f} {pct(proxied, 50) - pct(direct, 50):>9.0f} "
                f"{pct(proxied, 99) - pct(direct, 99):>7.0f} {own_p50:>13.0f} {own_p99:>7.0f}"
            )
    finally:
        proxy.terminate()
        upstream.terminate()
        proxy.wait(10)
        upstream.wait(10)


if __name__ == "__main__":
    main()
