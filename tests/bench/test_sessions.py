"""`bench sessions`: agents that resend a growing conversation in lockstep, and the cache hits per turn."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flashspark.bench.options import SessionShape
from flashspark.bench.sessions import load_shape, read_sessions, run_sessions
from flashspark.client import OpenAIClient
from flashspark.errors import InputError
from tests.standin import Reply, StandIn, stream_reply

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
SMALL = SessionShape(agents=3, turns=4, system_tokens=20, task_tokens=5, growth_tokens=7, output_tokens=4)


def _words(messages: list[dict[str, Any]]) -> list[int]:
    return [len(str(m["content"]).split()) for m in messages]


class PrefixCache:
    """A stand-in's prefix cache by whole messages: a request hits every leading message some earlier
    request already sent (one token per word), and /metrics counts queries and hits as vLLM does."""

    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.seen: set[str] = set()
        self.queries = self.hits = 0
        self.publish()

    def publish(self) -> None:
        self.server.metrics = (
            f'vllm:prefix_cache_queries_total{{engine="0"}} {self.queries}\n'
            f'vllm:prefix_cache_hits_total{{engine="0"}} {self.hits}\n'
        )

    def __call__(self, request: dict[str, Any]) -> Reply:
        messages = request["messages"]
        counts = _words(messages)
        hit = 0
        for end in range(1, len(messages) + 1):
            key = json.dumps(messages[:end])
            if key not in self.seen:
                break
            hit = sum(counts[:end])
        for end in range(1, len(messages) + 1):
            self.seen.add(json.dumps(messages[:end]))
        self.queries += sum(counts)
        self.hits += hit
        self.publish()
        agent = messages[1]["content"].split(":")[0]
        return stream_reply([(0.002, f"{agent} reply {len(messages)}")], completion_tokens=4, prompt_tokens=sum(counts))


async def test_each_agent_resends_its_whole_conversation_and_it_grows_every_turn(tmp_path: Path) -> None:
    with StandIn() as server:
        server.responder = PrefixCache(server)
        async with OpenAIClient(server.url) as client:
            results = await run_sessions(client, shape=SMALL, run_dir=tmp_path)
        chats = server.requests
    assert len(chats) == 12 and results.ok
    by_agent: dict[str, list[list[dict[str, Any]]]] = {}
    for chat in chats:
        by_agent.setdefault(chat["messages"][1]["content"].split(":")[0], []).append(chat["messages"])
    assert sorted(by_agent) == ["Agent 0", "Agent 1", "Agent 2"]
    for agent, turns in by_agent.items():
        assert [len(m) for m in turns] == [2, 4, 6, 8]
        for earlier, later in itertools.pairwise(turns):
            assert later[: len(earlier)] == earlier  # the prefix is resent unchanged
            reply, result = later[len(earlier)], later[len(earlier) + 1]
            assert reply == {"role": "assistant", "content": f"{agent} reply {len(earlier)}"}
            assert result["role"] == "user" and result["content"].startswith(f"Tool result for {agent.lower()}")
            assert len(result["content"].split(":", 1)[1].split("\n")[0].split()) == 7  # growth_tokens words
    systems = {turns[0][0]["content"] for turns in by_agent.values()}
    assert len(systems) == 1  # one system prompt shared by the fleet
    assert all(c["max_tokens"] == 4 and c["min_tokens"] == 4 and c["temperature"] == 0.0 for c in chats)


async def test_turns_run_in_lockstep_and_the_cache_counters_are_split_per_turn(tmp_path: Path) -> None:
    with StandIn() as server:
        cache = PrefixCache(server)
        server.responder = cache
        async with OpenAIClient(server.url) as client:
            results = await run_sessions(client, shape=SMALL, run_dir=tmp_path)
        turn_of = [len(c["messages"]) // 2 - 1 for c in server.requests]
    assert turn_of == sorted(turn_of)  # no agent starts turn t+1 before every agent finished turn t
    assert server.max_in_flight == 3
    assert sum(r.prefix_cache_queries or 0 for r in results.turns) == cache.queries
    assert sum(r.prefix_cache_hits or 0 for r in results.turns) == cache.hits
    first, second = results.turns[0], results.turns[1]
    # turn 0: the shared system prompt (26 words) is a hit for the second and third agents only
    assert first.prefix_cache_hits == 2 * len(server.requests[0]["messages"][0]["content"].split())
    # turn 1: everything but the new reply and tool result was sent before
    context = first.prompt_tokens_mean
    assert second.prefix_cache_hits == 3 * context if context is not None else False
    assert second.hit_rate == pytest.approx(second.prefix_cache_hits / second.prefix_cache_queries)
    assert [r.turn for r in results.turns] == [0, 1, 2, 3]
    assert [r.ok for r in results.turns] == [3, 3, 3, 3]
    means = [r.prompt_tokens_mean or 0 for r in results.turns]
    assert means == sorted(means) and means[0] < means[-1]


async def test_a_failed_request_is_on_record_and_the_fleet_goes_on(tmp_path: Path) -> None:
    shape = SessionShape(agents=2, turns=2, system_tokens=3, task_tokens=2, growth_tokens=2, output_tokens=2)
    with StandIn() as server:
        server.queue(Reply(status=500))
        async with OpenAIClient(server.url) as client:
            results = await run_sessions(client, shape=shape, run_dir=tmp_path)
    assert not results.ok and results.failed == 1
    failed = [r for r in results.records if not r.ok]
    assert [(r.agent, r.turn) for r in failed] in ([(0, 0)], [(1, 0)])
    assert "HTTP 500" in (failed[0].error or "")
    assert len(results.records) == 4  # the failed agent's next turn still ran
    assert [r.prefix_cache_queries for r in results.turns] == [None, None]  # no counters: unknown, not 0
    assert results.turns[0].hit_rate is None


async def test_think_time_is_slept_between_turns_not_before_the_first(tmp_path: Path) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    shape = SessionShape(agents=1, turns=3, system_tokens=1, task_tokens=1, growth_tokens=1, think_time_s=2.5)
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            await run_sessions(client, shape=shape, run_dir=tmp_path, sleep=sleep)
    assert slept == [2.5, 2.5]


async def test_results_are_written_after_every_turn_and_read_back(tmp_path: Path) -> None:
    seen_turns: list[int] = []
    with StandIn() as server:
        server.responder = PrefixCache(server)

        def on_turn(row: Any) -> None:
            seen_turns.append(len(read_sessions(tmp_path).turns))  # on disk before the next turn starts

        async with OpenAIClient(server.url) as client:
            results = await run_sessions(client, shape=SMALL, run_dir=tmp_path, on_turn=on_turn)
    assert seen_turns == [1, 2, 3, 4]
    saved = read_sessions(tmp_path)
    assert saved.schema_version == 1 and saved.kind == "sessions" and saved.shape == SMALL
    assert saved.pins.served_model == "standin" and saved.records == results.records
    lines = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    assert [(line["agent"], line["turn"]) for line in lines] == [(a, t) for t in range(4) for a in range(3)]


def test_a_shape_file_is_read_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "shape.toml"
    path.write_text("[session]\nagents = 8\nturns = 3\nthink_time_s = 1.5\n")
    assert load_shape(path) == SessionShape(agents=8, turns=3, think_time_s=1.5)
    assert load_shape(path, agents=2, turns=None) == SessionShape(agents=2, turns=3, think_time_s=1.5)
    path.write_text("agents = 5\n")  # top-level keys work too
    assert load_shape(path).agents == 5
    assert load_shape(None) == SessionShape()


@pytest.mark.parametrize(
    ("text", "message", "key"),
    [
        ("[session]\nagentz = 3\n", "agentz: Extra inputs are not permitted", "agentz"),
        ("[session]\nturns = 0\n", "turns: Input should be greater than or equal to 1", "turns"),
        ("[session]\nturns = 'many'\n", "turns: Input should be a valid integer", "turns"),
        ("[session\n", "cannot read the session shape", None),
    ],
)
def test_a_bad_shape_file_names_the_key_and_the_file(tmp_path: Path, text: str, message: str, key: str | None) -> None:
    path = tmp_path / "shape.toml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_shape(path)
    assert message in caught.value.message and caught.value.key == key and caught.value.where == str(path)


def test_the_cli_runs_a_fleet_and_report_draws_it(tmp_path: Path) -> None:
    with StandIn() as server:
        server.responder = PrefixCache(server)
        env = {"FLASHSPARK_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [FLASHSPARK, "bench", "sessions", "--base-url", server.url, "--agents", "2", "--turns", "3",
             "--system-tokens", "10", "--growth-tokens", "5", "--output-tokens", "3", "--out", str(tmp_path / "s"),
             "--json"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    assert payload["shape"]["agents"] == 2 and payload["shape"]["task_tokens"] == SessionShape().task_tokens
    assert [t["ok"] for t in payload["turns"]] == [2, 2, 2]
    report = subprocess.run([FLASHSPARK, "report", str(tmp_path / "s")], capture_output=True, text=True, check=False)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "s" / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 1 | 2/2 |")]
    assert len(rows) == 1 and rows[0].endswith("% |")
    assert "2 agents x 3 turns in lockstep" in text and "6/6 requests answered" in text
    assert (tmp_path / "s" / "sessions.png").stat().st_size > 10_000


def test_report_on_a_directory_with_no_run_says_what_it_looks_for(tmp_path: Path) -> None:
    report = subprocess.run([FLASHSPARK, "report", str(tmp_path)], capture_output=True, text=True, check=False)
    assert report.returncode == 2
    assert "holds no run FlashSpark can report on" in report.stderr and "sessions.json" in report.stderr


def test_a_turn_record_keeps_the_answer_s_numbers_rounded() -> None:
    from flashspark.bench.sessions import _record
    from flashspark.client import ChatResult

    result = ChatResult(
        ok=True, prompt_tokens=300, completion_tokens=9, ttft_s=0.123456, last_token_s=0.923456, e2e_s=1.0000049
    )
    record = _record(2, 3, result)
    assert (record.agent, record.turn, record.ok, record.error) == (2, 3, True, None)
    assert (record.prompt_tokens, record.completion_tokens) == (300, 9)
    assert (record.ttft_s, record.e2e_s, record.decode_tokens_per_s) == (0.1235, 1.0, 10.0)
    failed = _record(0, 0, ChatResult(ok=False, error="HTTP 503"))
    assert (failed.ok, failed.error, failed.ttft_s, failed.decode_tokens_per_s) == (False, "HTTP 503", None, None)


def test_a_turn_row_is_the_median_and_the_worst_of_its_agents() -> None:
    from flashspark.bench.sessions import TurnRecord, _row

    records = [
        TurnRecord(agent=a, turn=1, ok=ok, prompt_tokens=p, ttft_s=t, decode_tokens_per_s=d)
        for a, (ok, p, t, d) in enumerate([(True, 100, 0.5, 10.0), (True, 120, 1.5, 20.0), (False, None, None, None)])
    ]
    row = _row(1, records, (1000.0, 200.0), (1300.0, 440.0))
    assert (row.turn, row.requests, row.ok, row.prompt_tokens_mean) == (1, 3, 2, 110.0)
    assert (row.ttft_p50_s, row.ttft_max_s, row.decode_tokens_per_s_p50) == (1.0, 1.5, 15.0)
    assert (row.prefix_cache_queries, row.prefix_cache_hits, row.hit_rate) == (300.0, 240.0, 0.8)
    empty = _row(0, [], None, (1.0, 1.0))
    assert (empty.prompt_tokens_mean, empty.ttft_p50_s, empty.ttft_max_s, empty.prefix_cache_hits) == (
        None, None, None, None,
    )  # fmt: skip


def test_a_bad_override_names_its_key_value_and_the_known_keys() -> None:
    with pytest.raises(InputError) as caught:
        load_shape(None, agents=0)
    error = caught.value
    assert (error.key, error.value, error.where) == ("agents", 0, None)
    assert error.fix is not None and "growth_tokens" in error.fix and "think_time_s" in error.fix
