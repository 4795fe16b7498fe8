"""The benchmark runner's parts, in this process against the stand-in: the requests it builds, how a
cell is split over client processes, the KV-usage sampler, the server-side deltas, and the metadata
results.json records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flashspark.bench.options import BenchOptions
from flashspark.bench.prompts import bench_messages
from flashspark.bench.runner import (
    CellPlan,
    MetricsSampler,
    request_for,
    run_bench_session,
    shares_for,
    staggered_cells,
)
from flashspark.client import OpenAIClient, Timeouts
from flashspark.client.metrics import GENERATION_TOKENS, KV_USAGE, PREEMPTIONS
from flashspark.pins import Pins
from tests.standin import StandIn, stream_reply

NO_THINKING = {"thinking": False, "enable_thinking": False}


def test_a_bench_request_is_salted_greedy_fixed_length_and_never_thinks() -> None:
    options = BenchOptions(max_tokens=77, extra_body={"top_k": 1})
    request = request_for("agent", model="m", options=options, run="r1", index=3)
    assert request.model == "m" and request.max_tokens == 77 and request.temperature == 0.0
    assert request.messages == bench_messages("agent", run="r1", index=3)
    assert request.extra == {"chat_template_kwargs": NO_THINKING, "ignore_eos": True, "top_k": 1}
    stopping = request_for("code", model="m", options=BenchOptions(ignore_eos=False), run="r1", index=0)
    assert stopping.extra == {"chat_template_kwargs": NO_THINKING}


def test_a_cell_is_split_round_robin_over_processes_with_everything_each_needs() -> None:
    cell = CellPlan("rate-x", "rate", [0.0, 0.1, 0.2, 0.3, 0.4], concurrency_cap=3)
    options = BenchOptions(categories=("code", "prose"), processes=2, max_tokens=9)
    client = OpenAIClient("http://127.0.0.1:9/v1", api_key="sk-share", timeouts=Timeouts(stall_s=7))
    first, second = shares_for(client, cell, model="m", options=options, run="run1")
    assert (first.base_url, first.api_key, first.cell, first.cap) == ("http://127.0.0.1:9/v1", "sk-share", "rate-x", 2)
    assert first.timeouts == Timeouts(stall_s=7).model_dump()
    assert [(i, d, c) for i, d, c, _ in first.items] == [(0, 0.0, "code"), (2, 0.2, "code"), (4, 0.4, "code")]
    assert [(i, d, c) for i, d, c, _ in second.items] == [(1, 0.1, "prose"), (3, 0.3, "prose")]
    expected = request_for("prose", model="m", options=options, run="run1rate-x", index=3).model_dump()
    assert second.items[1][3] == expected


def test_staggered_cells_are_shaped_staggered() -> None:
    assert staggered_cells(2, 1.5)[0].shape == "staggered"


def metrics(kv: float, generated: int = 0, preempted: int = 0) -> str:
    return (
        f'{KV_USAGE}{{engine="0",model_name="m"}} {kv}\n'
        f'{GENERATION_TOKENS}_total{{engine="0",model_name="m"}} {generated}\n'
        f'{PREEMPTIONS}_total{{engine="0",model_name="m"}} {preempted}\n'
    )


async def test_the_sampler_keeps_the_peak_and_outlasts_a_failed_scrape() -> None:
    with StandIn(metrics="not a metrics page {") as server:
        async with OpenAIClient(server.url) as client:
            sampler = MetricsSampler(client)
            async with sampler:
                await asyncio.sleep(0.7)  # one sample of a broken page: skipped, not the end
                server.metrics = metrics(0.25)
                await asyncio.sleep(0.5)
                server.metrics = metrics(0.75)
                await asyncio.sleep(0.5)
                server.metrics = metrics(0.5)
                await asyncio.sleep(0.6)
            assert sampler.kv_peak == 0.75
            assert sampler._task is not None and sampler._task.done()  # stopped with the cell


async def test_a_session_records_its_metadata_and_the_servers_side(tmp_path: Path) -> None:
    with StandIn(model="m", metrics=metrics(0.1)) as server:

        def count(_request: dict[str, Any]) -> None:
            server.metrics = metrics(0.3, generated=5 * len(server.requests), preempted=1)

        server.responder = count  # type: ignore[assignment]
        server.default = stream_reply([(0.0, "abcde")], completion_tokens=5)
        async with OpenAIClient(server.url) as client:
            run = await run_bench_session(
                client,
                [CellPlan("static-c2-r0", "static", [0.0, 0.0], level=2)],
                shape="static",
                options=BenchOptions(warmup_requests=0),
                run_dir=tmp_path / "run",
                pins=Pins(image="img@sha256:abc"),
                boot={"boot_s": 1.0},
                recipe={"profile": {"name": "x"}},
            )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (results["shape"], results["base_url"], results["model"]) == ("static", f"{server.url}/v1", "m")
    assert results["options"] == BenchOptions(warmup_requests=0).model_dump(mode="json")
    assert results["pins"]["image"] == "img@sha256:abc" and results["boot"] == {"boot_s": 1.0}
    assert results["recipe"] == {"profile": {"name": "x"}}
    assert run.run_dir == str(tmp_path / "run") and run.results == str(tmp_path / "run" / "results.json")
    assert run.requests.endswith("requests.jsonl") and run.summary.endswith("summary.csv")
    [cell] = run.cells
    assert cell.completed == 2 and cell.server_metrics
    assert cell.server_generation_tokens == 10 and cell.num_preemptions == 1
    assert cell.kv_cache_usage_peak == pytest.approx(0.3)
