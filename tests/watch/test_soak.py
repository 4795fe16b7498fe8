"""Soak against a stand-in whose replies a test scripts: every problem is one event with its evidence,
the summary counts what happened, it stops at its duration with the requests in flight counted, a stop
keeps everything so far, and the report draws the timeline. The embedded default's soak is measured
in the issue's closing note (10 minutes is too long for CI); the real engine runs a short one in
tests/engine/test_watch_engine.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flashspark.cli.common import parse_number_list
from flashspark.cli.watch import parse_duration
from flashspark.client import ChatResult, OpenAIClient
from flashspark.errors import InputError
from flashspark.report import write_run_report
from flashspark.watch.soak import SOAK_KINDS, Soak, SoakOptions, read_soak, soak_checks
from tests.standin import Reply, StandIn, stream_reply

CJK = "".join(chr(0x4E00 + 7 * i) for i in range(50))
GOOD = "Check the traceback first, then run the single failing test with -x to see the first error."


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, (run_dir / "soak.jsonl").read_text().splitlines()) if e["event"] == kind]


async def test_every_bad_reply_is_one_problem_event_and_the_summary_counts_them(tmp_path: Path) -> None:
    served = 0

    def reply(request: dict[str, Any]) -> Reply:
        nonlocal served
        served += 1
        if served == 3:
            return stream_reply([(0.0, CJK)], completion_tokens=50)  # CJK drift, nothing repeated
        if served == 5:
            return stream_reply([(0.0, "ok")], completion_tokens=40)  # short body: 2 characters for 40 tokens
        if served == 7:
            return Reply(status=500)
        return stream_reply([(0.01, GOOD)], completion_tokens=18)

    with StandIn() as server:
        server.responder = reply
        options = SoakOptions(
            duration_s=0.6,
            concurrency=2,
            max_tokens=(64,),
            heartbeat_s=0.2,
            sample_s=0.1,
            canary_interval_s=None,
            seed=7,
        )
        async with OpenAIClient(server.url) as client:
            summary = await Soak(client, options, tmp_path).run()
    problems = events(tmp_path, "problem")
    assert summary.finished and not summary.stopped_early
    assert summary.requests == served == len(events(tmp_path, "request")) >= 8
    assert (summary.errors, summary.degenerate) == (1, 2)
    assert summary.problems == {"cjk_drift": 1, "short_body": 1}
    assert len(problems) == 3 and not summary.healthy
    short = next(p for p in problems if any(d["detector"] == "short_body" for d in p["detectors"]))
    assert short["detectors"] == [{"detector": "short_body", "detail": "2 characters for 40 tokens"}]
    assert short["content"] == "ok"
    errored = next(p for p in problems if p["error"])
    assert errored["detectors"] == [] and "500" in errored["error"]
    assert summary.completion_tokens == 18 * (served - 3) + 50 + 40
    assert events(tmp_path, "heartbeat") and len(events(tmp_path, "sample")) >= 3
    assert json.loads((tmp_path / "soak.json").read_text())["requests"] == summary.requests
    assert events(tmp_path, "stop")[0]["finished"] is True


async def test_a_stop_ends_it_early_and_keeps_everything(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = stream_reply([(0.05, GOOD)], completion_tokens=18)
        options = SoakOptions(duration_s=60, concurrency=3, heartbeat_s=30, sample_s=0.1, canary_interval_s=None)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        async with OpenAIClient(server.url) as client:
            summary = await asyncio.wait_for(Soak(client, options, tmp_path).run(stop), 10)
    saved, journal = read_soak(tmp_path)
    assert summary.stopped_early and not summary.finished and summary.wall_s < 5
    assert saved.requests == summary.requests >= 3 and saved.stopped_early
    assert journal[-1]["event"] == "stop" and journal[-1]["finished"] is False


async def test_draws_cover_every_kind_length_and_temperature(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = stream_reply([(0.0, GOOD)], completion_tokens=18)
        options = SoakOptions(
            duration_s=0.5,
            concurrency=2,
            max_tokens=(11, 22),
            temperatures=(0.0, 0.9),
            sample_s=1,
            canary_interval_s=None,
            seed=1,
        )
        async with OpenAIClient(server.url) as client:
            await Soak(client, options, tmp_path).run()
        sent = server.requests
    assert {r["max_tokens"] for r in sent} == {11, 22} and {r["temperature"] for r in sent} == {0.0, 0.9}
    systems = {r["messages"][0]["content"].split(".")[0] for r in sent}
    assert len(systems) == len(SOAK_KINDS)  # six kinds, six different system prompts


async def test_canary_rounds_run_between_the_soaks_requests(tmp_path: Path) -> None:
    from tests.watch.test_canary import SETTINGS, SickServer

    with StandIn() as server:
        SickServer(server, healthy=10_000)
        options = SoakOptions(duration_s=0.8, concurrency=1, max_tokens=(16,), sample_s=1, canary_interval_s=0.2)
        async with OpenAIClient(server.url) as client:
            summary = await Soak(client, options, tmp_path, canary=SETTINGS).run()
    assert summary.canary_rounds >= 2 and summary.canary_alerts == []
    assert len(events(tmp_path, "canary")) == summary.canary_rounds
    assert (tmp_path / "canary.jsonl").is_file()


def test_the_short_body_rule_has_its_boundaries() -> None:
    def reply(content: str, tokens: int) -> ChatResult:
        return ChatResult(ok=True, content=content, completion_tokens=tokens, finish_reason="stop")

    assert [h.detector for h in soak_checks(reply("abcdefg", 20))] == ["short_body"]  # 0.35 characters a token
    assert soak_checks(reply("a" * 8 + " ", 20)) == [] or "short_body" not in [
        h.detector for h in soak_checks(reply("abcdefgh", 20))
    ]
    assert "short_body" not in [h.detector for h in soak_checks(reply("abcdefgh", 20))]  # exactly 0.4
    assert "short_body" not in [h.detector for h in soak_checks(reply("ab", 19))]  # too few tokens to judge


async def test_the_report_draws_the_timeline(tmp_path: Path) -> None:
    with StandIn() as server:
        server.default = stream_reply([(0.01, GOOD)], completion_tokens=18)
        options = SoakOptions(duration_s=0.4, concurrency=2, sample_s=0.1, canary_interval_s=None)
        async with OpenAIClient(server.url) as client:
            await Soak(client, options, tmp_path).run()
    written = write_run_report(tmp_path)
    assert [p.name for p in written] == ["report.md", "soak.png"]
    text = (tmp_path / "report.md").read_text()
    assert "completed after" in text and "verdict: **healthy**" in text and "![timeline](soak.png)" in text
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("text", "seconds"), [("45m", 2700), ("90s", 90), ("1.5h", 5400), ("12", 12), (" 2M ", 120)])
def test_durations_read_as_people_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "0", "-5m", "5x", "nanm", "infh", "1e400"])
def test_a_bad_duration_says_how_to_write_one(text: str) -> None:
    with pytest.raises(InputError) as bad:
        parse_duration(text, option="--heartbeat")
    assert bad.value.key == "--heartbeat" and bad.value.fix == "write e.g. 45m, 90s or 1.5h"


def test_number_lists() -> None:
    assert parse_number_list("300, 500,800", option="--max-tokens") == (300, 500, 800)
    assert parse_number_list("0,0.7", option="--temperatures", kind=float, minimum=0) == (0.0, 0.7)
    for bad in ("", "a,b", "-1", "1.5", "0"):  # a max_tokens of 0 asks the server for nothing
        with pytest.raises(InputError) as refused:
            parse_number_list(bad, option="--max-tokens", example="300,500,800")
        assert refused.value.key == "--max-tokens" and refused.value.fix == "write e.g. 300,500,800"
    for bad in ("nan", "inf", "0.3,-0.1"):  # NaN is no JSON number; a server would refuse the request
        with pytest.raises(InputError):
            parse_number_list(bad, option="--temperatures", kind=float, minimum=0)
