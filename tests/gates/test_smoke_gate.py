"""The smoke gate's judgement, against a stand-in that answers right, wrong, or not at all."""

from __future__ import annotations

from flashspark.client import OpenAIClient
from flashspark.gates.smoke import DEFAULT_EXPECT, run_smoke
from tests.standin import Reply, StandIn, stream_reply


async def test_exact_replies_pass_and_the_prompt_is_the_fixed_phrase() -> None:
    with StandIn() as server:
        server.queue(*(stream_reply([(0, "NVFP4 "), (0, "DSPARK OK")], completion_tokens=5) for _ in range(3)))
        async with OpenAIClient(server.url) as client:
            report = await run_smoke(client, concurrency=3)
        assert report.ok and report.passed == 3
        body = server.requests[0]
        assert body["temperature"] == 0.0
        assert body["messages"][-1]["content"] == f"Repeat after me: {DEFAULT_EXPECT}"


async def test_a_different_expectation_fails_and_does_not_change_the_prompt() -> None:
    with StandIn() as server:
        server.queue(stream_reply([(0, "NVFP4 DSPARK OK")], completion_tokens=5))
        async with OpenAIClient(server.url) as client:
            report = await run_smoke(client, expect="SOMETHING ELSE")
        assert not report.ok
        assert "expected 'SOMETHING ELSE'" in (report.requests[0].error or "")
        assert server.requests[0]["messages"][-1]["content"].endswith(DEFAULT_EXPECT)


async def test_one_failed_request_fails_the_gate_and_is_recorded() -> None:
    with StandIn() as server:
        server.queue(stream_reply([(0, "NVFP4 DSPARK OK")], completion_tokens=5), Reply(status=500))
        async with OpenAIClient(server.url) as client:
            report = await run_smoke(client, concurrency=2)
        assert not report.ok and report.passed == 1
        assert any("HTTP 500" in (r.error or "") for r in report.requests)
