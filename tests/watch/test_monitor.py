"""The monitor's numbers from two /metrics reads, its feed, and its page's live stream, against a
stand-in whose counters a test sets; the real engine's monitor is in tests/engine/test_watch_engine.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flashspark.client import OpenAIClient
from flashspark.watch.monitor import Feed, Sampler, run_monitor, web_server
from flashspark.watch.view import NodeView
from tests.standin import StandIn

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def vllm_metrics(*, generation: float, prompt: float, preemptions: float, ttft_slow: float, kv: float) -> str:
    """The families the monitor reads, in vLLM's names; `ttft_slow` observations in (1, 2.5], none faster."""
    return f"""# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{{engine="0"}} {generation}
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{{engine="0"}} {prompt}
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{{engine="0"}} {preemptions}
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0"}} {kv}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0"}} 3
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0"}} 1
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="1.0"}} 0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="2.5"}} {ttft_slow}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf"}} {ttft_slow}
vllm:time_to_first_token_seconds_count{{engine="0"}} {ttft_slow}
vllm:time_to_first_token_seconds_sum{{engine="0"}} {2 * ttft_slow}
"""


async def test_rates_and_percentiles_are_over_the_window_between_reads() -> None:
    with StandIn() as server:
        server.metrics = vllm_metrics(generation=1000, prompt=500, preemptions=2, ttft_slow=4, kv=0.25)

        async def nodes() -> list[NodeView]:
            return [
                NodeView(node="spark-1", rank=0, engine="running"),
                NodeView(node="spark-2", rank=1, engine="exited"),
            ]

        async with OpenAIClient(server.url) as client:
            sampler = Sampler(client, deployment="pair", nodes=nodes)
            first = await sampler.sample()
            await asyncio.sleep(0.2)
            server.metrics = vllm_metrics(generation=1600, prompt=800, preemptions=5, ttft_slow=8, kv=0.5)
            second = await sampler.sample()
    # the first read has gauges, no window
    assert first.window_s is None and first.serving.generation_tps is None and first.serving.kv_usage == 0.25
    assert first.serving.ttft_p50_s is None
    v = second.serving
    assert second.window_s is not None and second.window_s >= 0.2
    assert v.generation_tps == pytest.approx(600 / second.window_s, rel=0.01)
    assert v.prompt_tps == pytest.approx(300 / second.window_s, rel=0.01)
    assert v.preemptions == 3 and v.kv_usage == 0.5 and (v.running, v.waiting) == (3, 1)
    # four new observations, all in (1.0, 2.5]: the window's median interpolates to the middle
    assert v.ttft_p50_s == pytest.approx(1.75)
    assert v.acceptance_rate is None and v.per_position == []  # no speculative counters at all
    assert [n.engine for n in second.nodes] == ["running", "exited"] and v.health == "ok"


async def test_an_unreachable_server_is_said_and_its_counters_start_over() -> None:
    with StandIn() as server:
        server.metrics = vllm_metrics(generation=1000, prompt=0, preemptions=0, ttft_slow=0, kv=0.1)
        url = server.url
        client = OpenAIClient(url)
        sampler = Sampler(client, deployment="solo")
        await sampler.sample()
    gone = await sampler.sample()  # the stand-in has stopped
    await client.aclose()
    assert gone.serving.health == "unreachable" and gone.error and gone.window_s is None
    assert sampler._previous is None  # a restarted engine's counters are not subtracted from the old ones


async def test_the_page_streams_every_snapshot_as_a_server_sent_event() -> None:
    with StandIn() as server:
        server.metrics = vllm_metrics(generation=10, prompt=0, preemptions=0, ttft_slow=0, kv=0.1)
        feed = Feed()
        web = web_server(feed)
        url = await web.start()
        async with OpenAIClient(server.url) as client:
            sampler = Sampler(client, deployment='evil"<script>')
            task = asyncio.ensure_future(run_monitor(sampler, feed, interval_s=0.05, count=3))
            reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            events = []
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            while len(events) < 3:
                block = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)
                events.append(block)
            writer.close()
            await task
            latest_status, latest = await fetch(web.port, "/snapshot.json")
            page_status, page = await fetch(web.port, "/")
            script_status, script = await fetch(web.port, "/monitor.js")
        await web.close()
    assert url.startswith("http://127.0.0.1:")
    assert b"Content-Type: text/event-stream" in head
    snapshots = [json.loads(e.split(b"data: ", 1)[1]) for e in events]
    assert all(e.startswith(b"event: snapshot\n") for e in events)
    assert [s["deployment"] for s in snapshots] == ['evil"<script>'] * 3
    assert len({s["t"] for s in snapshots}) == 3  # three distinct snapshots, in order
    assert latest_status == 200 and json.loads(latest)["t"] == snapshots[-1]["t"]
    assert page_status == 200 and b'<script src="/monitor.js"' in page and b"https://" not in page  # offline
    assert script_status == 200 and b"innerHTML" not in script and b"textContent" in script


async def fetch(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_no_snapshot_yet_is_a_503_not_a_stale_page() -> None:
    web = web_server(Feed())
    await web.start()
    try:
        status, body = await fetch(web.port, "/snapshot.json")
    finally:
        await web.close()
    assert status == 503 and json.loads(body) == {"error": "no snapshot yet"}


def test_the_cli_prints_plain_lines_when_piped_and_ndjson_with_json(tmp_path: Path) -> None:
    with StandIn() as server:
        server.metrics = vllm_metrics(generation=10, prompt=0, preemptions=0, ttft_slow=0, kv=0.125)
        env = {"FLASHSPARK_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        common = ["monitor", "--base-url", server.url, "--interval", "0.2", "--count", "2"]
        plain = subprocess.run([FLASHSPARK, *common], capture_output=True, text=True, timeout=60, env=env, check=False)
        ndjson = subprocess.run(
            [FLASHSPARK, *common, "--json"], capture_output=True, text=True, timeout=60, env=env, check=False
        )
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and all("health=ok" in line and "kv=12.5%" in line for line in lines)
    assert ndjson.returncode == 0, ndjson.stderr
    snapshots = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert len(snapshots) == 2 and snapshots[1]["serving"]["generation_tps"] == 0.0
    assert snapshots[0]["schema_version"] == 1 and snapshots[0]["base_url"] == f"{server.url}/v1"


async def test_a_server_whose_metrics_lie_is_reported_not_fatal() -> None:
    with StandIn() as server:
        server.metrics = (
            '# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{engine="0"} 3\n'
        )
        async with OpenAIClient(server.url) as client:
            snapshot = await Sampler(client, deployment="liar").sample()
    assert snapshot.serving.health == "unreachable"
    assert snapshot.error == "vllm:time_to_first_token_seconds_bucket has a bucket without its le label"
