"""What does vLLM's router add to every request? Measured from outside, direct against routed.

One upstream serves streamed chat completions: the token stand-in (benchmarks/token_server.py, its
own process, 32 tokens per reply as fast as the socket takes them) by default, or a real server
given with --base-url (a vLLM-CPU replica: its own decode time then dominates, and the router's share
is the difference). A real `vllm-router` process (PyPI vllm-router, round_robin, one worker) is
started in front of it. Requests alternate direct / routed so both see the same machine load; at
each concurrency level, the time to the first content chunk (TTFT) and to the end (E2E) are taken
per request, and the router's added latency is the routed distribution minus the direct one,
percentile by percentile.

    python benchmarks/router_latency.py [--requests 400] [--concurrency 1,16] [--base-url URL --api-key K]
                                        [--router-bin PATH]

A number printed here is a measurement of this run on this machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from client_bench import free_port, pct

from flashspark.client import ChatRequest, OpenAIClient

ROUTER = str(Path(sys.executable).parent / "vllm-router")


def wait_port(port: int, timeout_s: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout_s:g} s")


async def measure(
    base_url: str, key: str | None, requests: int, concurrency: int, max_tokens: int
) -> tuple[list[float], list[float]]:
    ttft: list[float] = []
    e2e: list[float] = []
    async with OpenAIClient(base_url, api_key=key) as client:
        model = await client.default_model()
        request = ChatRequest(messages=[{"role": "user", "content": "Count."}], max_tokens=max_tokens, model=model)
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                reply = await client.stream_chat(request)
                if reply.ok and reply.ttft_s is not None:
                    ttft.append(reply.ttft_s * 1000)
                    e2e.append(reply.e2e_s * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttft, e2e


def row(label: str, direct: list[float], routed: list[float]) -> str:
    cells = []
    for q in (50, 99):
        d, r = pct(direct, q), pct(routed, q)
        cells.append(f"p{q} {d:8.2f} -> {r:8.2f} ms ({r - d:+.2f})")
    return f"  {label:5s} " + "   ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per path per level (split in rounds)")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--base-url", default=None, help="a real upstream (…/v1) instead of the stand-in")
    parser.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    parser.add_argument("--router-bin", default=ROUTER, help="the vllm-router executable (default: beside this Python)")
    args = parser.parse_args()
    processes = []
    try:
        if args.base_url is None:
            port = free_port()
            processes.append(
                subprocess.Popen([sys.executable, str(Path(__file__).with_name("token_server.py")), str(port)])
            )
            wait_port(port)
            upstream = f"http://127.0.0.1:{port}"
        else:
            upstream = args.base_url.removesuffix("/v1")
        router_port, metrics_port = free_port(), free_port()
        processes.append(
            subprocess.Popen(
                [args.router_bin, "--host", "127.0.0.1", "--port", str(router_port), "--worker-urls", upstream,
                 "--policy", "round_robin", "--prometheus-port", str(metrics_port), "--log-level", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        wait_port(router_port)
        print(f"upstream {upstream}; vllm-router on :{router_port}; {args.max_tokens} tokens per reply")
        for level in (int(c) for c in args.concurrency.split(",")):
            direct_t: list[float] = []
            direct_e: list[float] = []
            routed_t: list[float] = []
            routed_e: list[float] = []
            rounds = 4  # alternate, so that both paths see the same drift of the machine
            for _ in range(rounds):
                t, e = asyncio.run(
                    measure(f"{upstream}/v1", args.api_key, args.requests // rounds, level, args.max_tokens)
                )
                direct_t += t
                direct_e += e
                t, e = asyncio.run(
                    measure(
                        f"http://127.0.0.1:{router_port}/v1",
                        args.api_key,
                        args.requests // rounds,
                        level,
                        args.max_tokens,
                    )
                )
                routed_t += t
                routed_e += e
            print(f"concurrency {level}: {len(direct_t)} direct, {len(routed_t)} routed requests")
            print(row("TTFT", direct_t, routed_t))
            print(row("E2E", direct_e, routed_e))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
