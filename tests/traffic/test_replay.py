"""Replay: recorded requests sent again as the harness sent them, with timing, concurrency and a cold salt,
and every answer judged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flashspark.client import OpenAIClient
from flashspark.errors import InputError
from flashspark.traffic.exchange import Exchange, read_exchanges
from flashspark.traffic.replay import read_replay, replay_request, run_replay, salted
from tests.gates.test_tools_gate import PARIS, text_stream, tool_stream
from tests.standin import Reply, StandIn

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
SYSTEM = "You are Hermes, a careful coding agent. Ask for context when a request is ambiguous, cite paths."


def exchange(n: int, user: str, *, offset: float = 0.0, **extra: Any) -> Exchange:
    body = {
        "model": "recorded-model",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
    }
    return Exchange(
        id=f"ex{n}",
        started_at="2026-12-01T00:00:00+00:00",
        offset_s=offset,
        method="POST",
        path="/v1/chat/completions",
        request_headers={},
        request={**body, "stream": False, **extra},
        verdict="healthy",
    )


def test_the_request_is_the_recorded_body_streamed_to_the_chosen_model() -> None:
    recorded = exchange(0, "hi", tools=[{"type": "function"}], tool_choice="auto", max_tokens=50, temperature=0.2)
    request = replay_request(recorded, "served", None)
    body = request.body("served")
    assert body["model"] == "served" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [{"type": "function"}] and body["tool_choice"] == "auto"
    assert body["max_tokens"] == 50 and body["temperature"] == 0.2
    assert body["messages"] == recorded.request["messages"]


def test_the_salt_leads_the_system_prompt_or_becomes_one() -> None:
    messages = [{"role": "system", "content": "rules"}, {"role": "user", "content": "q"}]
    assert salted(messages, "S1") == [{"role": "system", "content": "S1\nrules"}, {"role": "user", "content": "q"}]
    assert messages[0]["content"] == "rules"  # the recording is not changed
    assert salted([{"role": "user", "content": "q"}], "S2")[0] == {"role": "system", "content": "S2"}


def responder(request: dict[str, Any]) -> Reply:
    user = request["messages"][-1]["content"]
    return {
        "good": text_stream("Which file do you mean?"),
        "leak": text_stream("Sure <|im_end|>"),
        "recite": text_stream(f"Noted: {SYSTEM}"),
        "tool": tool_stream([("get_weather", PARIS)]),
        "fail": Reply(status=500),
    }[user]


async def test_every_answer_gets_a_verdict_and_the_results_are_written(tmp_path: Path) -> None:
    recorded = [exchange(i, user) for i, user in enumerate(["good", "leak", "recite", "tool", "fail"])]
    recorded[3].tool_calls = [{"function": {"name": "get_weather", "arguments": PARIS}}]
    models = exchange(9, "")
    models.method, models.path, models.request = "GET", "/v1/models", None
    with StandIn() as server:
        server.responder = responder
        async with OpenAIClient(server.url) as client:
            results = await run_replay(client, [*recorded, models], source="x.jsonl", run_dir=tmp_path)
        sent = server.requests
    assert [o.verdict for o in results.outcomes] == ["healthy", "garbled", "suspicious", "healthy", "error"]
    assert results.skipped == 1 and not results.ok and results.verdicts["healthy"] == 2
    assert results.outcomes[3].same_tools is True and results.outcomes[0].same_tools is None
    assert results.outcomes[2].flags[0]["detector"] == "recited_prompt"
    assert results.model == "standin"  # the recorded model is not served here: the server's own
    assert all(body["model"] == "standin" and body["stream"] is True for body in sent)
    saved = read_replay(tmp_path)
    assert saved.schema_version == 1 and saved.outcomes == results.outcomes and saved.pins.served_model == "standin"
    assert len((tmp_path / "replay.jsonl").read_text().splitlines()) == 5


async def test_a_tool_call_that_changed_is_reported(tmp_path: Path) -> None:
    recorded = exchange(0, "good")
    recorded.tool_calls = [{"function": {"name": "get_weather", "arguments": PARIS}}]
    with StandIn() as server:
        server.responder = responder
        async with OpenAIClient(server.url) as client:
            results = await run_replay(client, [recorded], source="x", run_dir=tmp_path)
    assert results.outcomes[0].same_tools is False


async def test_original_timing_keeps_the_recorded_spacing(tmp_path: Path) -> None:
    recorded = [exchange(0, "good", offset=10.0), exchange(1, "good", offset=10.4), exchange(2, "good", offset=10.5)]
    with StandIn() as server:
        server.responder = responder
        async with OpenAIClient(server.url) as client:
            results = await run_replay(
                client, recorded, source="x", run_dir=tmp_path, timing="original", concurrency=4, model="standin"
            )
    sent = [o.sent_s for o in results.outcomes]
    assert [o.scheduled_s for o in results.outcomes] == [0.0, 0.4, 0.5]
    assert sent[1] - sent[0] >= 0.39 and sent[2] - sent[0] >= 0.49  # never early


async def test_fast_timing_is_held_to_the_concurrency(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = text_stream("Which file?")
        server.default.chunks[1] = (0.1, server.default.chunks[1][1])
        async with OpenAIClient(server.url) as client:
            results = await run_replay(
                client, [exchange(i, "x") for i in range(6)], source="x", run_dir=tmp_path, concurrency=2
            )
        assert server.max_in_flight == 2
    assert len(results.outcomes) == 6 and results.ok


async def test_salted_replays_lead_every_system_prompt_with_their_own_salt(tmp_path: Path) -> None:
    with StandIn() as server:
        server.responder = responder
        async with OpenAIClient(server.url) as client:
            await run_replay(
                client, [exchange(0, "good"), exchange(1, "good")], source="x", run_dir=tmp_path, salt=True
            )
        systems = [r["messages"][0]["content"] for r in server.requests]
    heads = [s.split("\n")[0] for s in systems]
    assert len(set(heads)) == 2 and all(h.startswith("Replay ") for h in heads)
    assert all(s.endswith(SYSTEM) for s in systems)


def test_a_file_that_is_not_a_recording_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(exchange(0, "a").model_dump_json() + '\n\n{"id": 3}\n')
    with pytest.raises(InputError) as caught:
        read_exchanges(path)
    assert caught.value.where == f"{path}:3" and "flashspark record" in (caught.value.fix or "")


def test_the_cli_replays_a_file_exits_4_on_a_bad_answer_and_report_tables_it(tmp_path: Path) -> None:
    source = tmp_path / "exchanges.jsonl"
    source.write_text("".join(exchange(i, u).model_dump_json() + "\n" for i, u in enumerate(["good", "leak"])))
    with StandIn() as server:
        server.responder = responder
        env = {"FLASHSPARK_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
        started = time.time()
        run = subprocess.run(
            [FLASHSPARK, "replay", str(source), "--base-url", server.url, "--out", str(tmp_path / "r"), "--json"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert time.time() - started < 60
    assert run.returncode == 4, run.stderr
    payload = json.loads(run.stdout)
    assert [o["verdict"] for o in payload["outcomes"]] == ["healthy", "garbled"]
    report = subprocess.run([FLASHSPARK, "report", str(tmp_path / "r")], capture_output=True, text=True, check=False)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| 1 | healthy | **garbled** |" in text and "special_token_leak" in text
    assert "verdicts: 1 garbled, 1 healthy" in text


async def test_each_outcome_carries_what_the_server_answered_and_the_defaults_are_fast_single_unsalted(
    tmp_path: Path,
) -> None:
    recorded = [exchange(0, "leak", offset=5.0), exchange(1, "fail", offset=9.0)]
    recorded[0].verdict = "garbled"
    with StandIn() as server:
        server.responder = responder
        async with OpenAIClient(server.url) as client:
            results = await run_replay(client, recorded, source="src.jsonl", run_dir=tmp_path / "a" / "b")
        bodies, most = server.requests, server.max_in_flight
    leak, fail = results.outcomes
    assert (leak.prompt_tokens, leak.completion_tokens, leak.finish_reason) == (50, 12, "stop")
    assert leak.content == "Sure <|im_end|>" and leak.recorded_verdict == "garbled" and leak.exchange_id == "ex0"
    assert leak.flags == [{"detector": "special_token_leak", "detail": "<|im_end|>"}]
    assert leak.ttft_s is not None and leak.e2e_s is not None and leak.e2e_s >= leak.ttft_s
    assert fail.error is not None and "HTTP 500" in fail.error and fail.verdict == "error"
    assert [o.scheduled_s for o in results.outcomes] == [0.0, 0.0]  # fast: nothing waits for its offset
    assert (results.timing, results.concurrency, results.salted, results.source) == ("fast", 1, False, "src.jsonl")
    assert most == 1 and [b["messages"][0]["content"] for b in bodies] == [SYSTEM, SYSTEM]
    assert results.wall_s >= 0 and results.pins.vllm_version is None
    lines = [json.loads(line) for line in (tmp_path / "a" / "b" / "replay.jsonl").read_text().splitlines()]
    assert sorted(line["exchange_id"] for line in lines) == ["ex0", "ex1"]
    saved = json.loads((tmp_path / "a" / "b" / "replay.json").read_text())
    assert saved["outcomes"][0]["flags"][0]["detail"] == "<|im_end|>" and saved["kind"] == "replay"


async def test_the_recorded_model_is_kept_where_the_server_serves_it(tmp_path: Path) -> None:
    with StandIn(model="recorded-model") as server:
        server.responder = responder
        async with OpenAIClient(server.url) as client:
            results = await run_replay(client, [exchange(0, "good")], source="x", run_dir=tmp_path)
        body = server.requests[0]
    assert results.model == "recorded-model" and body["model"] == "recorded-model"


async def test_a_recording_of_no_chat_replays_nothing_and_is_ok(tmp_path: Path) -> None:
    models = exchange(0, "")
    models.method, models.path = "GET", "/v1/models"
    odd = exchange(1, "")
    odd.request = "not a JSON object"
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            results = await run_replay(client, [models, odd], source="x", run_dir=tmp_path)
        assert server.requests == []
    assert results.outcomes == [] and results.skipped == 2 and results.ok


def test_called_names_are_sorted_and_missing_functions_named_none() -> None:
    from flashspark.traffic.replay import _called

    calls = [{"function": {"name": "b"}}, {"function": {"name": "a"}}, {"type": "function"}]
    assert _called(calls) == ["None", "a", "b"]
