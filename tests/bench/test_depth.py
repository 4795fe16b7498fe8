"""`bench depth`: exact-length cold prompts, the ladder capped at the context, results and report on record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flashspark.bench.depth import (
    capped_ladder,
    exact_prompt,
    filler,
    messages_for,
    parse_contexts,
    read_depth,
    run_depth,
)
from flashspark.client import OpenAIClient
from flashspark.errors import InputError
from tests.standin import StandIn, stream_reply

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
PREFIX = 'vllm:prefix_cache_queries_total{{engine="0"}} {q}\nvllm:prefix_cache_hits_total{{engine="0"}} {h}\n'


def test_contexts_parse_with_binary_units_sorted_and_unique() -> None:
    assert parse_contexts("8k, 1k,1m,1k,300") == (300, 1024, 8192, 1048576)
    assert parse_contexts("0.5k,2K,1.5m") == (512, 2048, 1572864)


@pytest.mark.parametrize("bad", ["", ",", "ten", "1x", "-1k", "0", "1.3"])
def test_a_bad_context_list_is_an_input_error_naming_the_flag(bad: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_contexts(bad)
    assert caught.value.key == "--contexts"


def test_the_ladder_is_capped_at_the_context_beside_the_output() -> None:
    assert capped_ladder((1024, 2048), None, 64) == ([1024, 2048], "")
    assert capped_ladder((1024, 8128), 8192, 64) == ([1024, 8128], "")
    kept, note = capped_ladder((1024, 8192, 32768), 8192, 64)
    assert kept == [1024, 8128]
    assert note == "8192, 32768 capped to 8,128 (max_model_len 8,192 - 64 output)"
    assert capped_ladder((8129,), 8192, 64) == ([8128], "8129 capped to 8,128 (max_model_len 8,192 - 64 output)")
    with pytest.raises(InputError, match="leaves no room"):
        capped_ladder((10,), 64, 64)


@pytest.mark.parametrize("target", [16, 17, 50, 513, 4000])
async def test_a_prompt_lands_exactly_on_its_depth_as_the_server_counts_it(target: int) -> None:
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            messages, count = await exact_prompt(client, target, "Run x, depth y.", "standin")
    words = len(messages[0]["content"].split())
    assert count == target and words + server.template_tokens == target
    assert server.tokenize_calls < 30


async def test_a_depth_below_the_template_is_refused() -> None:
    with StandIn() as server:
        server.template_tokens = 40
        async with OpenAIClient(server.url) as client:
            with pytest.raises(InputError, match="chat template alone"):
                await exact_prompt(client, 20, "salt", "standin")


def test_the_salt_leads_the_prompt() -> None:
    first = messages_for("Run a, depth 1, pass 0.", 3, 2)[0]["content"]
    assert first.startswith("Run a, depth 1, pass 0.\nRecord 0:") and " ok ok\n" in first


async def test_the_ladder_runs_cold_one_at_a_time_and_is_written_as_it_goes(tmp_path: Path) -> None:
    with StandIn() as server:
        server.metrics = PREFIX.format(q=100, h=0)
        server.default = stream_reply([(0.01, "a"), (0.01, "b c")], completion_tokens=8)
        async with OpenAIClient(server.url) as client:
            results = await run_depth(
                client, depths=(40, 300, 9000), run_dir=tmp_path, output_tokens=8, repeats=2, max_model_len=4096
            )
        chats = server.requests
    assert results.ladder == [40, 300, 4088] and "9000 capped to 4,088" in results.capped
    assert [(p.depth, p.repeat) for p in results.points] == [(40, 0), (40, 1), (300, 0), (300, 1), (4088, 0), (4088, 1)]
    assert all(p.tokenized == p.depth and p.ok and p.prefix_cache_hit_tokens == 0 for p in results.points)
    assert server.max_in_flight == 1
    salts = [c["messages"][0]["content"].split("\n", 1)[0] for c in chats]
    assert len(set(salts)) == 6  # every request its own salt: nothing shared with the prefix cache
    assert all(c["max_tokens"] == 8 and c["min_tokens"] == 8 for c in chats)
    saved = read_depth(tmp_path)
    assert saved.schema_version == 1 and saved.ok and [r.depth for r in saved.rows] == [40, 300, 4088]
    assert saved.pins.served_model == "standin"
    assert len((tmp_path / "depth.jsonl").read_text().splitlines()) == 6


async def test_a_failed_point_is_on_record_and_the_run_is_not_ok(tmp_path: Path) -> None:
    from tests.standin import Reply

    with StandIn() as server:
        server.queue(Reply(status=503))
        async with OpenAIClient(server.url) as client:
            results = await run_depth(client, depths=(30, 60), run_dir=tmp_path, output_tokens=4)
    assert not results.ok
    assert [(r.depth, r.ok, r.requests) for r in results.rows] == [(30, 0, 1), (60, 1, 1)]
    assert "HTTP 503" in (results.points[0].error or "")
    assert results.max_model_len == 4096  # from /v1/models when no recipe says


def test_the_cli_writes_depth_json_and_report_draws_the_ladder(tmp_path: Path) -> None:
    with StandIn() as server:
        server.metrics = PREFIX.format(q=10, h=0)
        env = {"FLASHSPARK_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [FLASHSPARK, "bench", "depth", "--base-url", server.url, "--contexts", "64,128,8k",
             "--output-tokens", "4", "--out", str(tmp_path / "d"), "--json"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    assert [r["depth"] for r in payload["rows"]] == [64, 128, 4092]
    report = subprocess.run([FLASHSPARK, "report", str(tmp_path / "d")], capture_output=True, text=True, check=False)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "d" / "report.md").read_text()
    assert "| 4,092 | 10 | 1/1 |" in text and "Every prefill was cold" in text
    assert (tmp_path / "d" / "depth.png").stat().st_size > 10_000


def test_empty_parts_are_skipped_and_one_token_is_a_depth() -> None:
    assert parse_contexts("1k,,2k,") == (1024, 2048)
    assert parse_contexts("1") == (1,)


@pytest.mark.parametrize(
    ("text", "message", "fix"),
    [
        ("8k,ten", "'ten' is not a context depth", "write depths like 1k,8k,32k,1m"),
        ("1.3", "'1.3' is not a whole number of tokens", None),
        ("0", "'0' is not a whole number of tokens", None),
        (" , ", "no context depths given", "write depths like 1k,8k"),
    ],
)
def test_a_bad_context_list_says_what_is_wrong_where_and_how_to_fix_it(
    text: str, message: str, fix: str | None
) -> None:
    with pytest.raises(InputError) as caught:
        parse_contexts(text)
    assert (caught.value.message, caught.value.key, caught.value.value, caught.value.fix) == (
        message,
        "--contexts",
        text,
        fix,
    )


def test_a_one_token_cap_is_a_ladder_and_no_room_names_the_output_flag() -> None:
    assert capped_ladder((1,), 65, 64) == ([1], "")
    with pytest.raises(InputError) as caught:
        capped_ladder((10,), 64, 64)
    assert (caught.value.key, caught.value.fix) == ("--output-tokens", "ask for fewer output tokens")


def test_the_filler_is_numbered_records_of_six_varied_words() -> None:
    lines = filler(40).split("\n")
    assert len(lines) == 40 and all(line.startswith(f"Record {i}: ") for i, line in enumerate(lines))
    words = [line.split(": ", 1)[1].rstrip(".").split(" ") for line in lines]
    assert all(len(w) == 7 and w[-1].isdigit() and int(w[-1]) < 10000 for w in words)
    assert len({" ".join(w[:6]) for w in words}) == 40  # no two records alike
    assert len({w[-1] for w in words}) == 40
    assert messages_for("s", 1, 0)[0]["role"] == "user"


async def test_a_prompt_on_a_linear_tokenizer_takes_a_handful_of_counts() -> None:
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            _, count = await exact_prompt(client, 1000, "salt here", "standin")
        # the template, a probe, one guess from the probe's rate, no padding needed or one pad
        assert count == 1000 and server.tokenize_calls <= 5


async def test_the_numbers_of_each_point_are_the_request_s_and_hits_are_counted(tmp_path: Path) -> None:
    hits = [0]
    seen = []
    with StandIn() as server:
        server.metrics = PREFIX.format(q=0, h=0)

        def bump() -> None:  # the engine served 16 tokens from its prefix cache for this request
            hits[0] += 16
            server.metrics = PREFIX.format(q=hits[0] * 2, h=hits[0])

        server.after_chat = bump
        server.default = stream_reply([(0.05, "a"), (0.05, "b"), (0.05, "c")], completion_tokens=3, prompt_tokens=40)
        async with OpenAIClient(server.url) as client:
            results = await run_depth(
                client, depths=(40, 60), run_dir=tmp_path, model="standin", output_tokens=3, on_point=seen.append
            )
        chats = server.requests
    assert all(c["model"] == "standin" and c["temperature"] == 0.0 for c in chats)
    assert seen == results.points
    for point in results.points:
        assert point.prefix_cache_hit_tokens == 16 and point.completion_tokens == 3 and point.prompt_tokens == 40
        assert point.ttft_s is not None and point.e2e_s is not None and point.e2e_s > point.ttft_s
        assert point.prefill_tokens_per_s == round(40 / point.ttft_s, 1)
        assert point.decode_tokens_per_s == pytest.approx(2 / (0.1), rel=0.6)
    row = results.rows[1]
    assert row.ttft_s == round(results.points[1].ttft_s or 0, 4) and row.prompt_tokens == 40
    assert row.prefill_tokens_per_s == results.points[1].prefill_tokens_per_s
    assert row.decode_tokens_per_s == round(results.points[1].decode_tokens_per_s or 0, 4)
    lines = [json.loads(line) for line in (tmp_path / "depth.jsonl").read_text().splitlines()]
    assert [line["depth"] for line in lines] == [40, 60] and lines[0]["prefix_cache_hit_tokens"] == 16
    saved = read_depth(tmp_path)
    assert saved.created_at.endswith("+00:00") and saved.points == results.points


async def test_a_server_without_tokenize_fails_each_point_saying_so(tmp_path: Path) -> None:
    with StandIn() as server:
        server.tokenizes = False
        async with OpenAIClient(server.url) as client:
            results = await run_depth(client, depths=(100,), run_dir=tmp_path / "nested" / "run")
        assert server.requests == []  # nothing was sent at a length nobody could count
    point = results.points[0]
    assert (point.depth, point.repeat, point.ok, point.tokenized, point.prompt_tokens) == (100, 0, False, 0, None)
    assert "POST" in (point.error or "") and "/tokenize answered 404" in (point.error or "")
    assert not results.ok and (tmp_path / "nested" / "run" / "depth.json").is_file()


async def test_a_server_that_lies_about_token_counts_is_a_clean_error() -> None:
    from flashspark.errors import ClientError

    with StandIn() as server:
        server.template_tokens = -(10**12)  # a negative count: no tokenizer says that
        async with OpenAIClient(server.url) as client:
            with pytest.raises(ClientError, match="not a token count: -"):
                await client.tokenize([{"role": "user", "content": "hi"}], model="standin")
