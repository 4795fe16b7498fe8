"""Canaries against a stand-in that turns sick on command: a server that begins to garble after its
N-th request, one whose acceptance collapses, one whose last draft position stops accepting. Each is
caught within two rounds, journaled with its evidence, alerted once, exported, and recovered from.
The real engine's clean watch and Prometheus's alert are in tests/engine/test_watch_engine.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from flashspark.client import OpenAIClient
from flashspark.client.metrics import parse_metrics
from flashspark.watch.canary import MIN_DRAFTS_FOR_POSITIONS, Canary, CanarySettings, Journal, judge_acceptance
from flashspark.watch.exporter import exposition, label_value
from flashspark.watch.keeper import keep_watch, next_slot, stopped
from tests.standin import Reply, StandIn, stream_reply

SETTINGS = CanarySettings(
    interval_s=0.01,
    longdecode_every=1000,
    longdecode_tokens=64,
    longdecode_window_tokens=16,
    failures_to_alert=2,
    acceptance_floor=0.3,
    num_speculative_tokens=5,
    agent_max_tokens=32,
)
CLEAN = "Run the failing test first, read its traceback, then fix the parser."


def spec_metrics(drafts: float, per_position: list[float]) -> str:
    """vLLM's speculative counters for `drafts` drafts of k = len(per_position) tokens."""
    k = len(per_position)
    lines = [
        "# TYPE vllm:spec_decode_num_drafts counter",
        f"vllm:spec_decode_num_drafts_total {drafts}",
        "# TYPE vllm:spec_decode_num_draft_tokens counter",
        f"vllm:spec_decode_num_draft_tokens_total {drafts * k}",
        "# TYPE vllm:spec_decode_num_accepted_tokens counter",
        f"vllm:spec_decode_num_accepted_tokens_total {sum(per_position)}",
        "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter",
    ]
    lines += [
        f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{position="{i}"}} {a}' for i, a in enumerate(per_position)
    ]
    return "\n".join(lines) + "\n"


class SickServer:
    """A stand-in that answers the smoke and the agent prompt well for `healthy` chat requests, then
    garbles (when `garble`) and advances its speculative counters per request by `per_request`."""

    def __init__(self, server: StandIn, *, healthy: int, garble: bool = True) -> None:
        self.server = server
        self.healthy = healthy
        self.garble = garble
        self.seen = 0
        self.drafts = 0.0
        self.accepted = [0.0] * 5
        self.good_step = [8.0, 6.0, 5.0, 4.0, 3.0]  # per 10 drafts: 26/50 = 52 % acceptance
        self.sick_step = self.good_step
        server.responder = self.reply
        server.after_chat = self.count

    @property
    def sick(self) -> bool:
        return self.seen > self.healthy

    def reply(self, request: dict[str, Any]) -> Reply:
        self.seen += 1
        last = str(request["messages"][-1]["content"])
        text = last.split("Repeat after me: ", 1)[1] if "Repeat after me: " in last else CLEAN
        if self.sick and self.garble:
            text = "的" * 60
        return stream_reply([(0.0, text)], completion_tokens=12)

    def count(self) -> None:
        step = self.sick_step if self.sick else self.good_step
        self.drafts += 10
        self.accepted = [a + s for a, s in zip(self.accepted, step, strict=True)]
        self.server.metrics = spec_metrics(self.drafts, self.accepted)


def journal_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_server_that_begins_to_garble_is_caught_within_two_rounds_and_exported(tmp_path: Path) -> None:
    # two chat requests per round: rounds 0 and 1 are requests 1-4, healthy; garble starts at request 5 (round 2)
    with StandIn() as server:
        sick = SickServer(server, healthy=4)
        async with OpenAIClient(server.url) as client:
            summary = await keep_watch(client, SETTINGS, tmp_path, rounds=5, exporter=("127.0.0.1", 0))
            page = exposition_after(summary.exporter_url)
    journal = journal_of(tmp_path / "canary.jsonl")
    rounds = [e for e in journal if e["event"] == "round"]
    assert [r["ok"] for r in rounds] == [True, True, False, False, False]
    alerts = [e for e in journal if e["event"] == "alert"]
    # the first failing round is 2; the second failure in a row (round 3) alerts, once per probe
    assert sorted((a["probe"], a["round"], a["failures_in_a_row"]) for a in alerts) == [
        ("agent", 3, 2),
        ("smoke", 3, 2),
    ]
    agent = next(e for e in journal if e["event"] == "probe" and e["probe"] == "agent" and e["round"] == 2)
    assert agent["ok"] is False and "cjk" in agent["detail"] and agent["evidence"]["content"] == "的" * 60
    smoke = next(e for e in journal if e["event"] == "probe" and e["probe"] == "smoke" and e["round"] == 2)
    assert smoke["evidence"]["content"] == "的" * 60 and "expected 'NVFP4 DSPARK OK'" in smoke["detail"]
    assert summary.alerts and not summary.ok and summary.failures == {"smoke": 3, "agent": 3}
    assert summary.rounds == 5 and summary.requests == 10 and sick.seen == 10
    assert json.loads((tmp_path / "watch.json").read_text())["alerts"] == summary.alerts
    assert page is None  # the exporter stopped with the watch


def exposition_after(url: str | None) -> str | None:
    """What the exporter answers after the watch returned (None: nothing listens any more)."""
    import urllib.error
    import urllib.request

    assert url is not None
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return None


async def test_the_exporter_shows_the_alert_while_it_lasts_and_the_recovery_after(tmp_path: Path) -> None:
    with StandIn() as server:
        sick = SickServer(server, healthy=2)
        async with OpenAIClient(server.url) as client:
            canary = Canary(client, SETTINGS, Journal(tmp_path / "canary.jsonl"))
            for _ in range(3):  # round 0 healthy, rounds 1 and 2 garbled: alert
                await canary.round()
            alerting = metric_values(exposition(canary.state))
            sick.garble = False
            await canary.round()  # healthy again
            healed = metric_values(exposition(canary.state))
    assert alerting[("flashspark_canary_alert", "smoke")] == 1.0
    assert alerting[("flashspark_canary_ok", "smoke")] == 0.0
    assert alerting[("flashspark_canary_failures_in_a_row", "agent")] == 2.0
    assert alerting[("flashspark_canary_failures", "smoke")] == 2.0  # the counter family, _total dropped
    assert alerting[("flashspark_canary_rounds", "")] == 3.0
    assert alerting[("flashspark_canary_requests", "")] == 6.0
    assert healed[("flashspark_canary_alert", "smoke")] == 0.0
    assert healed[("flashspark_canary_ok", "smoke")] == 1.0
    assert healed[("flashspark_canary_failures_in_a_row", "smoke")] == 0.0
    assert healed[("flashspark_canary_failures", "smoke")] == 2.0  # history is kept
    recovered = [e for e in journal_of(tmp_path / "canary.jsonl") if e["event"] == "recovered"]
    assert sorted((e["probe"], e["round"], e["after"]) for e in recovered) == [("agent", 3, 2), ("smoke", 3, 2)]


def metric_values(page: str) -> dict[tuple[str, str], float]:
    """(family, probe label or "") -> value, parsed by Prometheus's own client parser."""
    values = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            values[(family.name, sample.labels.get("probe", ""))] = sample.value
    return values


async def test_acceptance_that_collapses_with_output_unchanged_is_caught(tmp_path: Path) -> None:
    # The Patch-4 case: replies stay right, acceptance falls from 52 % to 10 %.
    with StandIn() as server:
        sick = SickServer(server, healthy=4, garble=False)
        sick.sick_step = [3.0, 1.0, 1.0, 0.0, 0.0]  # 5/50 = 10 %, and positions 3 and 4 stop
        async with OpenAIClient(server.url) as client:
            canary = Canary(client, SETTINGS, Journal(tmp_path / "canary.jsonl"))
            results = [await canary.round() for _ in range(4)]
    acceptance = [next(r for r in round_ if r.probe == "acceptance") for round_ in results]
    assert [a.ok for a in acceptance] == [True, True, False, False]
    assert acceptance[0].detail == "acceptance 52.0% over 20 drafts"
    assert acceptance[2].detail == (
        "acceptance 10.0% below the floor 30%; draft positions [3, 4] accepted nothing in 20 drafts"
    )
    assert all(r.ok for round_ in results for r in round_ if r.probe in ("smoke", "agent"))
    assert canary.raised[0]["probe"] == "acceptance" and canary.raised[0]["round"] == 3


def snapshot(drafts: float, per_position: list[float]) -> Any:
    return parse_metrics(spec_metrics(drafts, per_position))


def test_acceptance_at_the_floor_passes_and_below_it_fails() -> None:
    before = snapshot(0, [0.0] * 5)
    at_floor = snapshot(100, [40.0, 40.0, 30.0, 20.0, 20.0])  # 150 / 500 = 30 %
    below = snapshot(100, [40.0, 40.0, 30.0, 20.0, 19.0])  # 149 / 500
    assert judge_acceptance(before, at_floor, floor=0.3, k=5).ok is True
    assert judge_acceptance(before, below, floor=0.3, k=5).ok is False
    assert judge_acceptance(before, below, floor=None, k=5).ok is True  # no floor: only the positions count


def test_a_silent_position_counts_only_over_enough_drafts() -> None:
    before = snapshot(0, [0.0] * 5)
    enough = snapshot(MIN_DRAFTS_FOR_POSITIONS, [10.0, 8.0, 6.0, 4.0, 0.0])
    too_few = snapshot(MIN_DRAFTS_FOR_POSITIONS - 1, [10.0, 8.0, 6.0, 4.0, 0.0])
    judged = judge_acceptance(before, enough, floor=None, k=5)
    assert (
        judged.ok is False
        and judged.detail == f"draft positions [4] accepted nothing in {MIN_DRAFTS_FOR_POSITIONS} drafts"
    )
    assert judge_acceptance(before, too_few, floor=None, k=5).ok is True
    # a server that exposes fewer positions than k: the missing ones are silent
    short = parse_metrics(
        spec_metrics(50, [10.0, 8.0, 6.0]).replace("_draft_tokens_total 150", "_draft_tokens_total 250")
    )
    assert "[3, 4]" in judge_acceptance(before, short, floor=None, k=5).detail


def test_no_drafts_is_a_skip_that_neither_breaks_nor_extends_a_streak(tmp_path: Path) -> None:
    quiet = snapshot(40, [10.0] * 5)
    skipped = judge_acceptance(quiet, quiet, floor=0.3, k=5)
    assert skipped.ok is None and skipped.detail == "no drafts in the window"
    canary = Canary(OpenAIClient("http://127.0.0.1:9"), SETTINGS, Journal(tmp_path / "canary.jsonl"))
    failed = judge_acceptance(snapshot(0, [0.0] * 5), snapshot(40, [1.0] * 5), floor=0.3, k=5)
    canary._count(0, failed)
    canary._count(1, skipped)
    streak = canary.state.streaks["acceptance"]
    assert (streak.in_a_row, streak.runs, streak.last_ok) == (1, 1, False)
    canary._count(2, failed)
    assert canary.raised and canary.raised[0]["round"] == 2  # the skip did not reset the streak


def test_label_values_survive_hostile_node_names() -> None:
    hostile = 'node"} 1\nflashspark_fake 1\\'
    page = f"# TYPE x gauge\nx{{node={label_value(hostile)}}} 1\n"
    (family,) = text_string_to_metric_families(page)
    assert [s.labels["node"] for s in family.samples] == [hostile]


def test_a_late_round_is_not_followed_by_a_burst() -> None:
    assert next_slot(10.0, 5.0, now=12.0) == 15.0  # on schedule: one interval after the last start
    assert next_slot(10.0, 5.0, now=15.0) == 15.0
    assert next_slot(10.0, 5.0, now=31.0) == 31.0  # overran by three slots: start now, not thrice at once


async def test_a_stop_is_seen_even_when_no_time_is_left_to_wait() -> None:
    # Behind schedule the wait is zero; a stop (SIGTERM) set during the round must still end the watch.
    stop = asyncio.Event()
    assert await stopped(stop, 0.0) is False
    stop.set()
    assert await stopped(stop, 0.0) is True
    assert await stopped(stop, -3.0) is True
    later = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, later.set)
    assert await stopped(later, 5.0) is True


async def test_a_sigterm_ends_a_watch_that_runs_behind_schedule(tmp_path: Path) -> None:
    # every round takes longer than the interval: the stop must still be seen between rounds
    with StandIn() as server:
        server.default = stream_reply([(0.05, "hello")], completion_tokens=1)
        stop = asyncio.Event()
        async with OpenAIClient(server.url) as client:
            settings = SETTINGS.model_copy(update={"interval_s": 0.001})
            asyncio.get_running_loop().call_later(0.3, stop.set)
            summary = await asyncio.wait_for(keep_watch(client, settings, tmp_path, stop=stop), 10)
    assert 1 <= summary.rounds < 20
    assert journal_of(tmp_path / "canary.jsonl")[-1]["event"] == "stop"


async def test_acceptance_counts_the_live_traffic_between_rounds_not_only_the_canarys_own(tmp_path: Path) -> None:
    # The canary's own requests draft well; what the fleet sent between two rounds drafted badly. The
    # window is from the previous round's end, so the fleet's collapse is what the round judges.
    with StandIn() as server:
        sick = SickServer(server, healthy=10_000, garble=False)
        async with OpenAIClient(server.url) as client:
            canary = Canary(client, SETTINGS, Journal(tmp_path / "canary.jsonl"))
            first = await canary.round()
            sick.drafts += 1000  # the fleet: 1,000 drafts, 50 accepted tokens of 5,000 drafted
            sick.accepted = [a + s for a, s in zip(sick.accepted, [30.0, 10.0, 5.0, 3.0, 2.0], strict=True)]
            server.metrics = spec_metrics(sick.drafts, sick.accepted)
            second = await canary.round()
    judged = [next(r for r in results if r.probe == "acceptance") for results in (first, second)]
    assert judged[0].ok is True
    assert judged[1].ok is False and judged[1].evidence["drafts"] == 1020  # the fleet's 1,000 and the round's 20


def test_exported_values_keep_every_digit(tmp_path: Path) -> None:
    canary = Canary(OpenAIClient("http://127.0.0.1:9"), SETTINGS, Journal(tmp_path / "canary.jsonl"))
    canary.state.tokens = 123_456_789
    canary.state.last_round_t = 1796189083.566
    canary.state.engines = {('spark "1"\nx', 0): True}
    values = {
        (family.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition(canary.state))
        for sample in family.samples
    }
    assert values[("flashspark_canary_tokens", ())] == 123_456_789  # `:g` wrote 1.23457e+08
    assert values[("flashspark_canary_last_round_timestamp_seconds", ())] == 1796189083.566
    assert values[("flashspark_engine_up", (("node", 'spark "1"\nx'), ("rank", "0")))] == 1.0


async def test_a_watch_too_short_to_alert_still_fails_on_a_failing_last_round(tmp_path: Path) -> None:
    # one round against a dead server: no alert (two failures in a row needed), and still not ok
    async with OpenAIClient("http://127.0.0.1:9") as client:
        summary = await keep_watch(client, SETTINGS, tmp_path, rounds=1)
    assert summary.alerts == [] and summary.last_round_failing == ["smoke", "agent", "acceptance"]
    assert not summary.ok
