"""The tool-call gate against a stand-in that answers each case right, then wrong in one way at a time:
each fault fails the case naming the check, and only expected cases fail the gate."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flashspark.client import OpenAIClient
from flashspark.gates.tools import CASES, FOLLOWUP_RESULT, TOOLS, run_tools
from flashspark.recipe.model import TOOL_CASES
from tests.standin import Reply, StandIn, chunk, sse, usage

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
Call = tuple[str, str]  # (function name, arguments as streamed)


def tool_stream(calls: list[Call], *, finish: str = "tool_calls", content: str = "", pieces: int = 3) -> Reply:
    """A streamed answer as vLLM sends it: each call's name first, then its arguments in pieces."""
    chunks = [(0.0, sse(chunk("", role="assistant")))]
    if content:
        chunks.append((0.0, sse(chunk(content))))
    for index, (name, arguments) in enumerate(calls):
        head = {"index": index, "id": f"call-{index}", "type": "function", "function": {"name": name}}
        chunks.append((0.0, sse(_delta([head]))))
        step = max(1, len(arguments) // pieces)
        for at in range(0, len(arguments), step):
            piece = {"index": index, "function": {"arguments": arguments[at : at + step]}}
            chunks.append((0.0, sse(_delta([piece]))))
    chunks += [(0.0, sse(chunk(finish=finish))), (0.0, sse(usage(50, 20))), (0.0, sse("[DONE]"))]
    return Reply(chunks=chunks)


def _delta(tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    body = chunk()
    body["choices"][0]["delta"] = {"tool_calls": tool_calls}
    return body


def text_stream(content: str, finish: str = "stop") -> Reply:
    return Reply(
        chunks=[
            (0.0, sse(chunk("", role="assistant"))),
            (0.0, sse(chunk(content, finish=finish))),
            (0.0, sse(usage(50, 12))),
            (0.0, sse("[DONE]")),
        ]
    )


PARIS = json.dumps({"city": "Paris", "unit": "celsius"})
TOKYO = json.dumps({"city": "Tokyo"})


def good_answer(case: str) -> Reply:
    return {
        "auto": tool_stream([("get_weather", PARIS)]),
        "required": tool_stream([("get_weather", json.dumps({"city": "Lisbon"}))]),
        "named": tool_stream([("get_weather", json.dumps({"city": "Oslo"}))], finish="stop"),
        "parallel": tool_stream([("get_weather", PARIS), ("get_local_time", TOKYO)]),
        "followup": text_stream("It is 17 °C in Paris with light rain."),
    }[case]


def case_of(request: dict[str, Any]) -> str:
    """Which case a request is, from what the gate sent."""
    choice = request["tool_choice"]
    if isinstance(choice, dict):
        return "named"
    if request["messages"][-1]["role"] == "tool":
        return "followup"
    if request.get("parallel_tool_calls"):
        return "parallel"
    return str(choice)


async def run_against(answers: Callable[[str], Reply], **kwargs: Any) -> Any:
    with StandIn() as server:
        server.responder = lambda request: answers(case_of(request))
        async with OpenAIClient(server.url) as client:
            report = await run_tools(client, **kwargs)
        return report, server.requests


def failed_checks(report: Any, case: str) -> list[str]:
    return next(c.failed for c in report.cases if c.case == case)


async def test_right_answers_pass_every_case_and_the_requests_carry_the_tools_api() -> None:
    report, requests = await run_against(good_answer)
    assert report.ok and report.passed == list(TOOL_CASES), report.summary
    by_case = {case_of(r): r for r in requests}
    assert set(by_case) == set(TOOL_CASES)
    assert all(r["tools"] == TOOLS and r["stream"] is True and r["temperature"] == 0.0 for r in requests)
    assert by_case["named"]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert by_case["required"]["tool_choice"] == "required" and by_case["auto"]["tool_choice"] == "auto"
    assert by_case["parallel"]["parallel_tool_calls"] is True
    fed_back = by_case["followup"]["messages"]
    assert fed_back[-2]["tool_calls"][0]["id"] == fed_back[-1]["tool_call_id"]
    assert json.loads(fed_back[-1]["content"]) == FOLLOWUP_RESULT
    named = next(c for c in report.cases if c.case == "named")
    assert named.tool_calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}


@pytest.mark.parametrize(
    ("case", "bad", "check"),
    [
        # tool markup leaked into content, and no call parsed from it
        (
            "auto",
            text_stream('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'),
            "content_clean",
        ),
        ("auto", text_stream("<｜tool▁calls▁begin｜>get_weather"), "content_clean"),
        # the calls dropped: the finish reason says tool_calls, nothing came
        ("required", tool_stream([]), "tool_calls"),
        # arguments that are not JSON, or JSON of the wrong shape
        ("required", tool_stream([("get_weather", '{"city": "Lisbon"')]), "arguments_json"),
        ("named", tool_stream([("get_weather", '"Oslo"')], finish="stop"), "arguments_schema"),
        (
            "named",
            tool_stream([("get_weather", '{"city": "Oslo", "unit": "kelvin"}')], finish="stop"),
            "arguments_schema",
        ),
        ("named", tool_stream([("get_weather", '{"town": "Oslo"}')], finish="stop"), "arguments_schema"),
        # the wrong function for a named choice; an undeclared one otherwise
        ("named", tool_stream([("get_local_time", TOKYO)], finish="stop"), "named_function"),
        ("required", tool_stream([("rm_rf", "{}")]), "known_function"),
        # one call where two were asked for
        ("parallel", tool_stream([("get_weather", PARIS)]), "tool_calls"),
        # the finish reason of a plain answer on a tool call
        ("auto", tool_stream([("get_weather", PARIS)], finish="stop"), "finish_reason"),
        ("auto", tool_stream([("get_weather", PARIS)], finish="length"), "finish_reason"),
        # the follow-up calls again, ignores the result, or leaks markup
        ("followup", tool_stream([("get_weather", PARIS)], finish="stop"), "answer"),
        ("followup", text_stream("It is sunny and warm in Paris."), "uses_result"),
        ("followup", text_stream("17 degrees </tool_call>"), "content_clean"),
        ("followup", text_stream("17 degrees, light rain", finish="length"), "finish_reason"),
    ],
)
async def test_each_fault_fails_its_case_naming_the_check(case: str, bad: Reply, check: str) -> None:
    report, _ = await run_against(lambda asked: bad if asked == case else good_answer(asked))
    assert not report.ok
    assert check in failed_checks(report, case), report.summary
    assert report.passed == [c for c in TOOL_CASES if c != case]


async def test_a_case_the_profile_does_not_expect_is_reported_but_does_not_fail_the_gate() -> None:
    def no_parallel(case: str) -> Reply:
        return tool_stream([("get_weather", PARIS)]) if case == "parallel" else good_answer(case)

    expected = tuple(c for c in TOOL_CASES if c != "parallel")
    report, _ = await run_against(no_parallel, expected=expected)
    assert report.ok and report.expected == list(expected)
    parallel = next(c for c in report.cases if c.case == "parallel")
    assert not parallel.ok and not parallel.expected and parallel.failed == ["tool_calls"]
    strict, _ = await run_against(no_parallel)
    assert not strict.ok


async def test_an_http_error_is_a_failed_answer_not_a_crash() -> None:
    report, _ = await run_against(lambda case: Reply(status=500) if case == "named" else good_answer(case))
    named = next(c for c in report.cases if c.case == "named")
    assert named.failed == ["answered"] and "HTTP 500" in (named.error or "")


def test_the_cases_are_the_recipe_s_names() -> None:
    assert tuple(CASES) == TOOL_CASES


def test_the_cli_exits_4_naming_the_failed_check_and_0_when_expectations_are_met(tmp_path: Path) -> None:
    with StandIn() as server:
        server.responder = lambda request: (
            tool_stream([("get_weather", "not json")])
            if case_of(request) == "required"
            else good_answer(case_of(request))
        )
        env = {"FLASHSPARK_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        failing = subprocess.run(
            [FLASHSPARK, "tools", "--base-url", server.url, "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        passing = subprocess.run(
            [FLASHSPARK, "tools", "--base-url", server.url, "--json", *[f"--expect={c}" for c in ("auto", "named")]],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    assert failing.returncode == 4, failing.stderr
    required = next(c for c in json.loads(failing.stdout)["cases"] if c["case"] == "required")
    assert "arguments_json" in required["failed"]
    assert passing.returncode == 0, passing.stdout


async def test_a_failed_check_says_why_and_a_passed_one_says_nothing() -> None:
    def faulty(case: str) -> Reply:
        return {
            "auto": tool_stream([("rm_rf", "{}")], finish="stop"),
            "required": tool_stream([("get_weather", '{"city": "Lis')]),
            "named": tool_stream([("get_local_time", '{"town": 1}')], finish="stop"),
            "parallel": tool_stream([("get_weather", PARIS)]),
            "followup": tool_stream([("get_weather", PARIS)], finish="stop"),
        }[case]

    report, _ = await run_against(faulty)
    details = {(c.case, check.name): check.detail for c in report.cases for check in c.checks}
    assert details[("auto", "known_function")] == "unknown: ['rm_rf']"
    assert details[("auto", "finish_reason")] == "'stop', expected tool_calls"
    assert details[("required", "arguments_json")] == 'get_weather: \'{"city": "Lis\''
    assert details[("named", "named_function")] == "called ['get_local_time']"
    assert details[("named", "arguments_schema")] == (
        "get_local_time: $: missing required 'city'; $: unexpected property 'town'"
    )
    assert details[("named", "finish_reason")] == "'stop', expected stop or tool_calls"
    assert details[("parallel", "tool_calls")] == "1 call(s) ['get_weather'], at least 2 expected"
    assert details[("followup", "answer")] == "1 further tool call(s)"
    assert details[("followup", "uses_result")] == "the answer must carry one of the tool's values ['17', 'light rain']"
    assert details[("parallel", "known_function")] == details[("parallel", "arguments_json")] == ""
    assert details[("parallel", "answered")] == details[("parallel", "content_clean")] == ""


async def test_the_model_and_token_budget_asked_for_are_sent_and_the_answer_is_kept() -> None:
    with StandIn() as server:
        server.responder = lambda request: good_answer(case_of(request))
        async with OpenAIClient(server.url) as client:
            report = await run_tools(client, model="served-name", max_tokens=77)
        requests = server.requests
    assert all(r["model"] == "served-name" and r["max_tokens"] == 77 for r in requests)
    assert report.model == "served-name"
    followup = next(c for c in report.cases if c.case == "followup")
    assert followup.finish_reason == "stop" and followup.content == "It is 17 °C in Paris with light rain."
    assert all(c.e2e_s is not None and c.e2e_s > 0 for c in report.cases)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (text_stream("LIGHT RAIN over Paris."), True),  # the value in any case
        (text_stream("Paris has light rain."), True),
        (text_stream("It is 17 degrees."), True),
        (text_stream("   "), False),
        (text_stream("It is 17 degrees. 然后我们需要检查这个函数的返回值是否正确以及边界情况"), False),
    ],
)
async def test_the_follow_up_answer_carries_the_result_in_clean_text(answer: Reply, ok: bool) -> None:
    report, _ = await run_against(lambda case: answer if case == "followup" else good_answer(case))
    followup = next(c for c in report.cases if c.case == "followup")
    assert followup.ok is ok, followup.failed
