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
    built = [
        (category, request_for(category, model="m", options=options, run="run1rate-x", index=index))
        for index, category in enumerate(["code", "prose", "code", "prose", "code"])
    ]
    first, second = shares_for(client, cell, built, 2)
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


def scrape(
    *,
    generated: int,
    drafts: int,
    draft_tokens: int,
    accepted: int,
    per_pos: list[int],
    hits: int,
    queries: int,
    preempted: int,
    kv: float,
) -> str:
    labels = 'engine="0",model_name="m"'
    lines = [
        f"vllm:generation_tokens_total{{{labels}}} {generated}",
        f"vllm:spec_decode_num_drafts_total{{{labels}}} {drafts}",
        f"vllm:spec_decode_num_draft_tokens_total{{{labels}}} {draft_tokens}",
        f"vllm:spec_decode_num_accepted_tokens_total{{{labels}}} {accepted}",
        *(
            f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{i}"}} {v}'
            for i, v in enumerate(per_pos)
        ),
        f"vllm:prefix_cache_hits_total{{{labels}}} {hits}",
        f"vllm:prefix_cache_queries_total{{{labels}}} {queries}",
        f"vllm:num_preemptions_total{{{labels}}} {preempted}",
        f"vllm:kv_cache_usage_perc{{{labels}}} {kv}",
    ]
    return "\n".join(lines) + "\n"


def test_the_server_side_of_a_cell_is_the_delta_of_two_scrapes() -> None:
    from flashspark.bench.runner import server_side
    from flashspark.client import parse_metrics

    before = parse_metrics(
        scrape(
            generated=100,
            drafts=10,
            draft_tokens=50,
            accepted=20,
            per_pos=[8, 6, 4, 1, 1],
            hits=0,
            queries=0,
            preempted=1,
            kv=0.0,
        )
    )
    after = parse_metrics(
        scrape(
            generated=300,
            drafts=30,
            draft_tokens=150,
            accepted=80,
            per_pos=[26, 22, 17, 9, 6],
            hits=10,
            queries=100,
            preempted=3,
            kv=0.2,
        )
    )
    stats = server_side(before, after, 4.0, 0.6)
    assert stats.server_metrics and stats.server_generation_tokens == 200
    assert stats.server_output_throughput == 50.0  # 200 tokens over 4 s
    assert (stats.spec_decode_num_drafts, stats.spec_decode_draft_tokens, stats.spec_decode_accepted_tokens) == (
        20,
        100,
        60,
    )
    assert stats.spec_decode_acceptance_rate == pytest.approx(0.6)
    assert stats.spec_decode_acceptance_length == pytest.approx(1 + 60 / 20)
    assert stats.spec_decode_per_position_acceptance_rates == pytest.approx([0.9, 0.8, 0.65, 0.4, 0.25])
    assert stats.prefix_cache_hit_rate == pytest.approx(0.1) and stats.num_preemptions == 2
    assert stats.kv_cache_usage_peak == 0.6  # the sampled peak beats the last gauge (0.2)
    assert stats.warnings == [
        "10% of prefix-cache queries hit during a cold cell: the result may be flattered by caching"
    ]
    assert server_side(before, after, 4.0, None).kv_cache_usage_peak == pytest.approx(0.2)
    assert server_side(before, after, 0.0, None).server_output_throughput is None


def test_a_cold_cell_at_the_warning_line_or_without_scrapes_warns_of_nothing() -> None:
    from flashspark.bench.runner import server_side
    from flashspark.client import parse_metrics

    zero = dict(generated=0, drafts=0, draft_tokens=0, accepted=0, per_pos=[0], preempted=0, kv=0.0)
    before = parse_metrics(scrape(hits=0, queries=0, **zero))  # type: ignore[arg-type]
    at_line = parse_metrics(scrape(hits=5, queries=100, **zero))  # type: ignore[arg-type]
    assert server_side(before, at_line, 1.0, None).warnings == []  # 5 % is the line, not past it
    assert server_side(None, at_line, 1.0, None).server_metrics is False
    assert server_side(before, None, 1.0, None).server_metrics is False


async def test_a_cell_in_this_process_warms_up_salted_keeps_its_cap_its_schedule_and_its_categories(
    tmp_path: Path,
) -> None:
    from flashspark.bench.results import ResultsWriter
    from flashspark.bench.runner import run_bench

    with StandIn(model="m") as server:
        server.default = stream_reply([(0.3, "abcde")], completion_tokens=5)  # each request ~0.3 s
        async with OpenAIClient(server.url) as client:
            writer = ResultsWriter(tmp_path / "run", meta={})
            [cell] = await run_bench(
                client,
                [CellPlan("rate-x", "rate", [0.0, 0.0, 0.0, 0.0, 0.6], concurrency_cap=2, level=2)],
                options=BenchOptions(categories=("code", "prose"), warmup_requests=1),
                writer=writer,
            )
        sent = list(server.requests)
        most = server.max_in_flight
    measured = sent[2:]
    salts = [r["messages"][0]["content"].split("]")[0] for r in sent]
    assert all(r["model"] == "m" for r in sent) and len(measured) == 5
    assert salts[0].endswith("w-0") and salts[1].endswith("w-1")  # one warm-up per category, salted apart
    assert [s.rsplit("-", 1)[1] for s in salts[2:]] == ["0", "1", "2", "3", "4"]
    assert all("rate-x" in s for s in salts[2:])
    assert most == 2  # the cap held in this process too
    assert (
        cell.completed == 5 and cell.per_category["code"].completed == 3 and cell.per_category["prose"].completed == 2
    )
    # Requests 0-3 arrive together (two at a time, ~0.6 s); request 4 at 0.6 s: the cell lasts ~0.9 s.
    assert 0.7 < 25 / cell.output_throughput < 2.0


async def test_a_failed_warm_up_names_the_cell_the_server_and_what_to_do(tmp_path: Path) -> None:
    from flashspark.bench.results import ResultsWriter
    from flashspark.bench.runner import run_bench
    from flashspark.errors import ClientError
    from tests.standin import Reply

    with StandIn(model="m") as server:
        server.default = Reply(status=500)
        async with OpenAIClient(server.url) as client:
            with pytest.raises(ClientError) as caught:
                await run_bench(
                    client,
                    [CellPlan("static-c1-r0", "static", [0.0], level=1)],
                    options=BenchOptions(),
                    writer=ResultsWriter(tmp_path / "run", meta={}),
                )
    error = caught.value
    assert error.message.startswith("a warm-up request of cell static-c1-r0 failed (http): ")
    assert error.where == f"{server.url}/v1"
    assert error.fix == "check the server (`flashspark status`, `flashspark smoke`); nothing of this cell was measured"


@pytest.mark.parametrize(("categories", "value"), [((), None), (("code", "poetry"), "poetry")])
async def test_prompt_categories_are_checked_before_anything_is_sent(
    categories: tuple[str, ...], value: str | None
) -> None:
    from flashspark.bench.results import ResultsWriter
    from flashspark.bench.runner import run_bench
    from flashspark.errors import InputError

    with StandIn(model="m") as server:
        async with OpenAIClient(server.url) as client:
            with pytest.raises(InputError) as caught:
                await run_bench(
                    client, [], options=BenchOptions(categories=categories), writer=ResultsWriter(Path("r"), meta={})
                )
        assert server.requests == []
    assert caught.value.key == "--categories" and caught.value.value == value
    assert caught.value.fix == "use code, agent, spec_copy, prose"


@pytest.mark.parametrize(
    ("completed", "failed", "kinds", "gone"),
    [
        (0, 2, {"stall": 1, "connect": 1}, True),
        (0, 1, {"reset": 1}, True),
        (0, 1, {"timeout": 1}, True),
        (1, 1, {"stall": 1}, False),  # one answer: the server is there, measured as sick
        (0, 2, {"stall": 1, "http": 1}, False),  # an HTTP error is an answer
        (0, 0, {}, False),  # an empty cell says nothing
    ],
)
def test_a_server_is_gone_only_when_nothing_was_answered(
    completed: int, failed: int, kinds: dict[str, int], gone: bool
) -> None:
    from flashspark.bench.runner import server_gone
    from flashspark.bench.stats import CellSummary

    summary = CellSummary.model_validate(
        {
            "cell": "c",
            "shape": "static",
            "requests": completed + failed,
            "completed": completed,
            "failed": failed,
            "error_kinds": kinds,
        }
    )
    assert server_gone(summary) is gone


async def test_a_run_stops_after_a_cell_nobody_answered_naming_where_its_results_are(tmp_path: Path) -> None:
    from flashspark.bench.results import ResultsWriter
    from flashspark.bench.runner import run_bench
    from flashspark.errors import ClientError
    from tests.standin import Reply, chunk, sse

    with StandIn(model="m") as server:
        server.default = Reply(chunks=[(0.0, sse(chunk("", role="assistant")))], then="stall", stall_s=30)
        async with OpenAIClient(server.url, timeouts=Timeouts(stall_s=0.3)) as client:
            writer = ResultsWriter(tmp_path / "run", meta={})
            with pytest.raises(ClientError) as caught:
                await run_bench(
                    client,
                    [CellPlan("static-c1-r0", "static", [0.0], level=1), CellPlan("static-c2-r0", "static", [0.0] * 2)],
                    options=BenchOptions(warmup_requests=0),
                    writer=writer,
                )
        assert len(server.requests) == 1  # the second cell never ran
    error = caught.value
    assert error.message == "every request of cell static-c1-r0 failed ({'stall': 1}): the server stopped answering"
    assert error.where == str(tmp_path / "run" / "results.json")
    assert error.fix == "the cells measured so far are kept there; check the server, then run the bench again"


async def test_unknown_categories_are_named() -> None:
    from flashspark.bench.results import ResultsWriter
    from flashspark.bench.runner import run_bench
    from flashspark.errors import InputError

    async with OpenAIClient("http://127.0.0.1:9") as client:
        for categories, message in (((), "no prompt category given"), (("poetry",), "unknown category 'poetry'")):
            with pytest.raises(InputError) as caught:
                await run_bench(
                    client, [], options=BenchOptions(categories=categories), writer=ResultsWriter(Path("x"), meta={})
                )
            assert caught.value.message == message


async def test_every_request_of_a_run_carries_its_eight_character_run_id_and_arrives_on_schedule(
    tmp_path: Path,
) -> None:
    import re

    from flashspark.bench.records import RequestRecord
    from flashspark.bench.results import ResultsWriter
    from flashspark.bench.runner import run_bench

    records: list[RequestRecord] = []
    with StandIn(model="m") as server:
        async with OpenAIClient(server.url) as client:
            await run_bench(
                client,
                [CellPlan("staggered-n2-g0.5", "staggered", [0.0, 0.5], level=2)],
                options=BenchOptions(warmup_requests=1),
                writer=ResultsWriter(tmp_path / "run", meta={}),
                on_record=records.append,
            )
        salts = [r["messages"][0]["content"].split("]")[0] + "]" for r in server.requests]
    run_id = salts[0].removeprefix("[request ")[:8]
    assert re.fullmatch(r"[0-9a-f]{8}", run_id)
    assert salts == [
        f"[request {run_id}w-0]",
        f"[request {run_id}staggered-n2-g0.5-0]",
        f"[request {run_id}staggered-n2-g0.5-1]",
    ]
    first, second = sorted(records, key=lambda r: r.index)
    assert 0.45 <= second.started_at - first.started_at <= 0.9  # sent at its time, not at once


async def test_a_cell_over_several_processes_hands_them_its_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process pool itself runs in tests marked `spawns`; here its inputs and outputs are checked.
    from flashspark.bench import runner

    handed: list[Any] = []

    async def pool(shares: list[Any], *, on_record: Any) -> tuple[list[Any], float]:
        handed.extend(shares)
        on_record("a record")
        return [], 2.0

    monkeypatch.setattr(runner, "run_in_processes", pool)
    seen: list[Any] = []
    cell = CellPlan("static-c3-r0", "static", [0.0] * 3, level=3)
    options = BenchOptions(warmup_requests=0, processes=2)
    with StandIn(model="m") as server:
        async with OpenAIClient(server.url) as client:
            summary = await runner.run_cell(client, cell, model="m", options=options, run="r", on_record=seen.append)
            built = [(c, request_for(c, model="m", options=options, run="rstatic-c3-r0", index=i)) for i, c in
                     enumerate(["code"] * 3)]  # fmt: skip
            expected = shares_for(client, cell, built, 2)
    assert handed == expected and seen == ["a record"]
    assert summary.duration == 2.0 and summary.requests == 3
