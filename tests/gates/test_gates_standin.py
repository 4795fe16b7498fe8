"""The gates against a stand-in that misbehaves on purpose: they fail for the right reason and never crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flashspark.client import OpenAIClient, Timeouts
from flashspark.gates.correctness import VICTIM_PROMPT, first_difference, run_correctness
from flashspark.gates.sanity import read_evidence, run_sanity
from flashspark.gates.speculative import run_speculative_gate
from tests.standin import Reply, StandIn, chunk, sse, stream_reply

CLEAN = "Read the failing test first, then run it alone to see the error."


async def test_sanity_names_the_detectors_that_fired(tmp_path: Path) -> None:
    with StandIn() as server:
        server.queue(
            stream_reply([(0, CLEAN)], completion_tokens=14),
            stream_reply([(0, "Sure. 然后我们需要检查这个函数的返回值是否正确以及边界情况。")], completion_tokens=30),
            stream_reply([(0, "<｜Assistant｜> leaked")], completion_tokens=3),
            stream_reply([(0, " ")], completion_tokens=40),
        )
        async with OpenAIClient(server.url) as client:
            report = await run_sanity(client, levels=(1, 3), evidence_path=tmp_path / "sanity.jsonl")
    assert not report.ok
    assert [(s.concurrency, s.good, s.bad) for s in report.levels] == [(1, 1, 0), (3, 0, 3)]
    assert set(report.detectors_fired) == {"cjk_drift", "special_token_leak", "empty_with_tokens"}
    rows = read_evidence(tmp_path / "sanity.jsonl")
    assert len(rows) == 4 and {r["kind"] for r in rows} >= {"tool_turn", "code", "json"}
    assert all({"ttft_s", "completion_tokens", "finish_reason", "hits", "sample"} <= set(r) for r in rows)


async def test_sanity_requests_are_agent_shaped_and_salted(tmp_path: Path) -> None:
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            await run_sanity(client, levels=(5,), evidence_path=tmp_path / "s.jsonl")
        bodies = server.requests
    kinds_seen = [json.dumps(b["messages"]) for b in bodies]
    assert any("read_file" in k for k in kinds_seen) and any("JSON" in k for k in kinds_seen)
    long_ones = [b for b in bodies if "log excerpt" in b["messages"][-1]["content"]]
    assert len(long_ones) == 1 and len(long_ones[0]["messages"][-1]["content"].split()) > 420
    assert all(b["temperature"] == 0.0 for b in bodies)


async def test_faults_are_recorded_as_failures_and_the_gate_finishes(tmp_path: Path) -> None:
    with StandIn() as server:
        server.queue(
            Reply(status=500),
            Reply(chunks=[(0, sse(chunk("half")))], then="reset"),
            Reply(chunks=[(0, sse(chunk("slow")))], then="stall", stall_s=5),
            Reply(chunks=[(0, b"data: {broken\n\n")]),
        )
        async with OpenAIClient(server.url, timeouts=Timeouts(stall_s=0.5)) as client:
            report = await run_sanity(client, levels=(4,), evidence_path=tmp_path / "faults.jsonl")
    assert not report.ok and report.levels[0].errors == 4
    kinds = sorted(r["error_kind"] for r in read_evidence(tmp_path / "faults.jsonl"))
    assert kinds == ["http", "malformed", "reset", "stall"]


def victim_responder(texts: list[str]):
    calls = {"victim": 0}

    def respond(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["content"] == VICTIM_PROMPT:
            text = texts[min(calls["victim"], len(texts) - 1)]
            calls["victim"] += 1
            return stream_reply([(0, text[:20]), (0.05, text[20:])], completion_tokens=60)
        return stream_reply([(0.02, "Hello!")], completion_tokens=2)

    return respond


REFERENCE = "\n".join(f"{i}: {p}" for i, p in enumerate([2, 3, 5, 7, 11, 13, 17, 19, 23, 29], start=1))


async def test_a_victim_that_changes_under_churn_fails_with_the_offset() -> None:
    changed = REFERENCE.replace("5: 11", "5: 12")
    with StandIn() as server:
        server.responder = victim_responder([REFERENCE, changed])
        async with OpenAIClient(server.url) as client:
            report = await run_correctness(client, modes=("condense",), churn_threads=2, lead_s=0.1)
    assert not report.ok
    (mode,) = report.modes
    assert not mode.identical and mode.churn_requests > 0
    assert mode.divergence is not None and mode.divergence.offset == REFERENCE.index("5: 11") + 4
    assert "5: 11" in mode.divergence.reference_window and "5: 12" in mode.divergence.victim_window


async def test_an_unchanged_victim_passes_both_modes() -> None:
    with StandIn() as server:
        server.responder = victim_responder([REFERENCE])
        async with OpenAIClient(server.url) as client:
            report = await run_correctness(client, churn_threads=2, lead_s=0.1, staggered_requests=4, stagger_s=0.05)
    assert report.ok and [m.mode for m in report.modes] == ["condense", "staggered"]
    assert all(m.identical for m in report.modes)


def test_first_difference_handles_a_truncated_victim() -> None:
    divergence = first_difference("abcdef", "abc")
    assert divergence is not None and divergence.offset == 3


SPEC_TEMPLATE = """# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{{engine="0"}} {d}
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{{engine="0"}} {t}
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{{engine="0"}} {a}
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",position="0"}} {p0}
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",position="1"}} {p1}
"""


async def test_speculative_gate_fails_when_a_position_accepts_nothing() -> None:
    with StandIn() as server:
        server.metrics = SPEC_TEMPLATE.format(d=0, t=0, a=0, p0=0, p1=0)

        def respond(body: dict[str, Any]) -> Reply:
            server.metrics = SPEC_TEMPLATE.format(d=10, t=20, a=8, p0=8, p1=0)
            return stream_reply([(0, "copied")], completion_tokens=5)

        server.responder = respond
        async with OpenAIClient(server.url) as client:
            report = await run_speculative_gate(client)
    assert report.status == "fail" and report.num_speculative_tokens == 2
    assert any("positions [1]" in reason for reason in report.reasons)
    assert report.mean_acceptance_length == 1.8


async def test_speculative_gate_skips_a_server_without_drafting_when_none_is_expected() -> None:
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            skipped = await run_speculative_gate(client, expected=False)
            failed = await run_speculative_gate(client, expected=True)
    assert skipped.status == "skip" and failed.status == "fail"
