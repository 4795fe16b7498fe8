"""The tool-call gate (`flashspark tools`): OpenAI tools API round trips, each call checked.

Five cases, the shapes agent harnesses send:
- auto: tools declared, `tool_choice: "auto"`, a request that needs one; the model decides.
- required: `tool_choice: "required"`: at least one call (vLLM enforces it with structured output).
- named: `tool_choice: {"type": "function", "function": {"name": ...}}`: exactly that function.
- parallel: a request that needs two calls, `parallel_tool_calls: true`.
- followup: the conversation continues after a call: the tool's result is fed back and the model
  must answer from it in plain content.

Every case is streamed, so the server's streaming tool parser is what is judged. Checks, each
named in the report: the calls parse, their arguments are a JSON object matching the declared
schema, no tool markup or special tokens leak into `content`, the finish reason is the API's
(`tool_calls`, or `stop` for a named function, as OpenAI does), and the follow-up answers using
the result. Which cases a profile's model must pass is the recipe's `gates.tools_expected`; the
others run and are reported without failing the gate.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, ChatResult, OpenAIClient
from flashspark.files import write_json
from flashspark.gates import garble
from flashspark.gates.tool_schema import schema_errors
from flashspark.recipe.model import TOOL_CASES

TOOLS_SCHEMA_VERSION = 1

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}
TIME_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name, e.g. Tokyo"}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": WEATHER_PARAMETERS,
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_local_time",
            "description": "Get the current local time in a city.",
            "parameters": TIME_PARAMETERS,
            "strict": True,
        },
    },
]
# `strict: true` asks for arguments that match the schema exactly (OpenAI's switch). vLLM 0.32 honours
# it with structured output; without it, its hermes path left named/required arguments unconstrained
# (SmolLM2 returned a JSON string where an object was declared).
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
# Also named in plain words: a chat template that does not render `tools` (SmolLM2's) still tells the
# model what it can call.
SYSTEM = (
    "You are an assistant with two tools: get_weather(city, unit) gives the weather in a city, "
    "get_local_time(city) gives the time in a city. Call a tool whenever it can answer the question."
)
# The tool result the follow-up case feeds back; its answer must carry one of the result's values.
FOLLOWUP_RESULT = {"city": "Paris", "temperature_c": 17, "sky": "light rain"}
FOLLOWUP_VALUES = ("17", "light rain")


@dataclass(frozen=True)
class ToolCase:
    name: str
    messages: list[dict[str, Any]]
    tool_choice: Any
    min_calls: int = 1
    parallel: bool | None = None
    finish_reasons: tuple[str, ...] = ("tool_calls",)
    named: str | None = None
    answer_must_hold: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_calls(self) -> bool:
        return not self.answer_must_hold


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


CASES: dict[str, ToolCase] = {
    "auto": ToolCase("auto", _user("What is the weather in Paris right now?"), "auto"),
    "required": ToolCase("required", _user("I am flying to Lisbon tomorrow."), "required"),
    "named": ToolCase(
        "named",
        _user("What is the weather in Oslo?"),
        {"type": "function", "function": {"name": "get_weather"}},
        named="get_weather",
        # OpenAI ends a named-function call with `stop`; vLLM follows it (serving.py), others say tool_calls.
        finish_reasons=("stop", "tool_calls"),
    ),
    "parallel": ToolCase(
        "parallel",
        _user("What is the weather in Paris, and what time is it in Tokyo? Call both tools."),
        "required",
        min_calls=2,
        parallel=True,
    ),
    "followup": ToolCase(
        "followup",
        [
            *_user("What is the weather in Paris right now?"),
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_weather_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_weather_1", "content": json.dumps(FOLLOWUP_RESULT)},
        ],
        "auto",
        min_calls=0,
        finish_reasons=("stop",),
        answer_must_hold=FOLLOWUP_VALUES,
    ),
}
assert tuple(CASES) == TOOL_CASES  # one list of cases: the recipe's names are these


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    ok: bool
    detail: str = ""


class CaseResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case: str
    expected: bool = Field(description="The profile expects this case to pass; otherwise it is reported only.")
    ok: bool
    failed: list[str] = Field(default_factory=list, description="Names of the checks that failed.")
    checks: list[Check]
    finish_reason: str | None
    tool_calls: list[dict[str, Any]]
    content: str
    error: str | None = None
    e2e_s: float | None = None


class ToolsReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = TOOLS_SCHEMA_VERSION
    ok: bool
    model: str | None
    expected: list[str]
    passed: list[str]
    cases: list[CaseResult]

    @property
    def summary(self) -> str:
        parts = []
        for case in self.cases:
            state = "pass" if case.ok else "FAIL " + ",".join(case.failed)
            parts.append(f"{case.case}: {state}" + ("" if case.expected else " (not expected)"))
        return "; ".join(parts)


async def run_tools(
    client: OpenAIClient,
    *,
    model: str | None = None,
    cases: tuple[str, ...] = TOOL_CASES,
    expected: tuple[str, ...] = TOOL_CASES,
    max_tokens: int = 256,
    report_path: Path | None = None,
) -> ToolsReport:
    """Run the chosen cases at once (they are independent) and judge each; the report is also written
    to `report_path` (tools.json) when given."""
    model = model or await client.default_model()
    chosen = [CASES[name] for name in cases]
    results = await asyncio.gather(*(client.stream_chat(_request(case, model, max_tokens)) for case in chosen))
    judged = [_judge(case, result, case.name in expected) for case, result in zip(chosen, results, strict=True)]
    report = ToolsReport(
        ok=all(c.ok for c in judged if c.expected),
        model=model,
        expected=[name for name in cases if name in expected],
        passed=[c.case for c in judged if c.ok],
        cases=judged,
    )
    if report_path is not None:
        write_json(report_path, report.model_dump(mode="json"))
    return report


def _request(case: ToolCase, model: str | None, max_tokens: int) -> ChatRequest:
    extra: dict[str, Any] = {"tools": TOOLS, "tool_choice": case.tool_choice, **case.extra}
    if case.parallel is not None:
        extra["parallel_tool_calls"] = case.parallel
    return ChatRequest(messages=case.messages, model=model, max_tokens=max_tokens, temperature=0.0, extra=extra)


def _judge(case: ToolCase, result: ChatResult, expected: bool) -> CaseResult:
    checks = [Check(name="answered", ok=result.ok, detail=result.error or "")]
    if result.ok:
        checks += _call_checks(case, result.tool_calls) if case.wants_calls else _answer_checks(case, result)
        checks.append(_clean_content(result.content))
        checks.append(
            Check(
                name="finish_reason",
                ok=result.finish_reason in case.finish_reasons,
                detail=f"{result.finish_reason!r}, expected {' or '.join(case.finish_reasons)}",
            )
        )
    failed = [c.name for c in checks if not c.ok]
    return CaseResult(
        case=case.name,
        expected=expected,
        ok=not failed,
        failed=failed,
        checks=checks,
        finish_reason=result.finish_reason,
        tool_calls=result.tool_calls,
        content=result.content[:2000],
        error=result.error,
        e2e_s=result.e2e_s,
    )


def _call_checks(case: ToolCase, calls: list[dict[str, Any]]) -> list[Check]:
    names = [str(call.get("function", {}).get("name")) for call in calls]
    checks = [
        Check(
            name="tool_calls",
            ok=len(calls) >= case.min_calls,
            detail=f"{len(calls)} call(s) {names}, at least {case.min_calls} expected",
        )
    ]
    if case.named is not None:
        wrong = [n for n in names if n != case.named]
        checks.append(Check(name="named_function", ok=bool(calls) and not wrong, detail=f"called {names}"))
    else:
        unknown = [n for n in names if n not in PARAMETERS]
        checks.append(Check(name="known_function", ok=not unknown, detail=f"unknown: {unknown}" if unknown else ""))
    not_json, mismatched = [], []
    for name, call in zip(names, calls, strict=True):
        text = call.get("function", {}).get("arguments") or ""
        try:
            arguments = json.loads(text)
        except ValueError:
            not_json.append(f"{name}: {text[:80]!r}")
            continue
        if name in PARAMETERS:
            errors = schema_errors(arguments, PARAMETERS[name])
            if errors:
                mismatched.append(f"{name}: {'; '.join(errors[:3])}")
    checks.append(Check(name="arguments_json", ok=not not_json, detail="; ".join(not_json)))
    checks.append(Check(name="arguments_schema", ok=not not_json and not mismatched, detail="; ".join(mismatched)))
    return checks


def _answer_checks(case: ToolCase, result: ChatResult) -> list[Check]:
    hits = garble.text_detectors(result.content)
    return [
        Check(
            name="answer",
            ok=bool(result.content.strip()) and not result.tool_calls and not hits,
            detail=(
                f"{len(result.tool_calls)} further tool call(s)"
                if result.tool_calls
                else "; ".join(f"{h.detector}: {h.detail}" for h in hits) or f"{len(result.content)} characters"
            ),
        ),
        Check(
            name="uses_result",
            ok=any(value.lower() in result.content.lower() for value in case.answer_must_hold),
            detail=f"the answer must carry one of the tool's values {list(case.answer_must_hold)}",
        ),
    ]


def _clean_content(content: str) -> Check:
    """Tool markup or special tokens in `content`: the parser let the model's call syntax through."""
    hits = garble.special_token_leak(content) + garble.markup_leak(content)
    return Check(name="content_clean", ok=not hits, detail="; ".join(f"{h.detector}: {h.detail}" for h in hits))
