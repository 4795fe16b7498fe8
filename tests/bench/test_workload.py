"""What a bench sends: exact-length prompts, datasets (chat JSONL, ShareGPT), extra body fields and headers,
each salted; hostile headers refused before anything is sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flashspark.bench.options import BenchOptions
from flashspark.bench.workload import DatasetRow, cell_requests, load_dataset
from flashspark.client import OpenAIClient
from flashspark.errors import InputError
from tests.standin import StandIn

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_jsonl_of_chat_requests_is_read_with_each_rows_max_tokens(tmp_path: Path) -> None:
    rows = load_dataset(
        write(
            tmp_path / "d.jsonl",
            '{"messages": [{"role": "user", "content": "one"}], "max_tokens": 7}\n\n'
            '{"model": "x", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "two"}]}\n',
        )
    )
    assert rows == [
        DatasetRow([{"role": "user", "content": "one"}], 7),
        DatasetRow([{"role": "system", "content": "s"}, {"role": "user", "content": "two"}], None),
    ]


def test_sharegpt_prompts_are_the_turns_before_the_first_reply(tmp_path: Path) -> None:
    conversation = {
        "id": "a",
        "conversations": [
            {"from": "system", "value": "be kind"},
            {"from": "human", "value": "hello"},
            {"from": "gpt", "value": "hi!"},
            {"from": "human", "value": "later turn"},
        ],
    }
    expected = [DatasetRow([{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}])]
    assert load_dataset(write(tmp_path / "a.json", json.dumps([conversation]))) == expected
    assert load_dataset(write(tmp_path / "b.jsonl", json.dumps(conversation) + "\n")) == expected


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ('{"messages": []}\n', "messages must be a non-empty list", "d.jsonl:1"),
        ('{"messages": [{"role": "user", "content": "a"}]}\nnot json\n', "line 2 is not JSON", "d.jsonl:2"),
        ('{"prompt": "a"}\n', "neither messages nor conversations", "d.jsonl:1"),
        ('{"messages": [{"role": "user", "content": "a"}], "max_tokens": 0}\n', "not a positive whole number", ":1"),
        ('{"conversations": [{"from": "gpt", "value": "hi"}]}\n', "no human turn", "d.jsonl:1"),
        ('{"conversations": [{"from": "robot", "value": "hi"}]}\n', "ShareGPT turn is not understood", ":1"),
        ("[1]", "not a JSON object", "entry 1"),
        ("\n\n", "holds no rows", "d.jsonl"),
    ],
)
def test_a_bad_dataset_names_the_row(tmp_path: Path, text: str, message: str, where: str) -> None:
    with pytest.raises(InputError) as caught:
        load_dataset(write(tmp_path / "d.jsonl", text))
    assert message in caught.value.message and caught.value.key == "--dataset"
    assert where in (caught.value.where or "")


async def test_dataset_rows_cycle_salted_with_their_own_lengths_and_the_extra_body() -> None:
    dataset = [DatasetRow([{"role": "user", "content": "one"}], 7), DatasetRow([{"role": "user", "content": "two"}])]
    options = BenchOptions(max_tokens=50, extra_body={"top_k": 1})
    async with OpenAIClient("http://127.0.0.1:9/v1") as client:  # nothing is sent: the rows need no server
        built = await cell_requests(client, 3, model="m", options=options, run="r", dataset=dataset)
    assert [category for category, _ in built] == ["dataset"] * 3
    contents = [request.messages[0]["content"] for _, request in built]
    assert contents == ["[request r-0] one", "[request r-1] two", "[request r-2] one"]
    assert [request.max_tokens for _, request in built] == [7, 50, 7]
    assert all(request.extra["top_k"] == 1 and request.extra["ignore_eos"] for _, request in built)
    assert dataset[0].messages[0]["content"] == "one"  # the dataset itself is not changed


async def test_input_tokens_makes_every_prompt_exactly_that_long_and_salted_apart() -> None:
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            built = await cell_requests(client, 4, model="standin", options=BenchOptions(input_tokens=120), run="r")
            counts = [await client.tokenize(request.messages, model="standin") for _, request in built]
    assert counts == [120] * 4 and {category for category, _ in built} == {"in120"}
    heads = [request.messages[0]["content"].split("]")[0] for _, request in built]
    assert len(set(heads)) == 4


def test_the_cli_sends_exact_prompts_headers_and_extra_body_and_masks_credentials(tmp_path: Path) -> None:
    with StandIn() as server:
        env = {"FLASHSPARK_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [FLASHSPARK, "bench", "static", "--base-url", server.url, "--concurrency", "2", "--warmup", "0",
             "--input-tokens", "64", "--output-tokens", "3", "--extra-body", '{"top_k": 1}',
             "--header", "X-Team: research", "--header", "Authorization: Bearer sk-bench-5e1f9a",
             "--out", str(tmp_path / "b"), "--json"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        seen, bodies = server.request_headers, server.requests
    assert run.returncode == 0, run.stderr
    assert [h["x-team"] for h in seen] == ["research", "research"]
    assert all(h["authorization"] == "Bearer sk-bench-5e1f9a" for h in seen)
    assert all(b["top_k"] == 1 and b["max_tokens"] == 3 for b in bodies)
    options = json.loads((tmp_path / "b" / "results.json").read_text())["options"]
    assert options["input_tokens"] == 64 and options["headers"] == {"X-Team": "research", "Authorization": "***"}
    for path in (tmp_path / "b").iterdir():
        assert "sk-bench-5e1f9a" not in path.read_text(errors="replace"), path.name
    assert "sk-bench-5e1f9a" not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--header", "X-Evil: a\r\nInjected: b"], "holds a control or non-ASCII character"),
        (["--header", "X Evil: a"], "is not an HTTP header name"),
        (["--header", "Host: evil.example"], "the client sets Host itself"),
        (["--header", "Content-Length: 0"], "the client sets Content-Length itself"),
        (["--header", "no-colon"], "is not NAME:VALUE"),
        (["--extra-body", "{top_k: 1}"], "--extra-body is not JSON"),
        (["--extra-body", "[1]"], "--extra-body must be a JSON object"),
        (["--input-tokens", "8", "--dataset", __file__], "--input-tokens and --dataset both choose the prompts"),
    ],
)
def test_hostile_or_broken_workload_flags_are_refused_before_anything_is_sent(
    tmp_path: Path, args: list[str], message: str
) -> None:
    with StandIn() as server:
        env = {"FLASHSPARK_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [FLASHSPARK, "bench", "static", "--base-url", server.url, "--concurrency", "1", *args],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        sent = server.requests
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert sent == []


FIX = 'each row is {"messages": [{"role": ..., "content": ...}]} or ShareGPT {"conversations": [...]}'


@pytest.mark.parametrize(
    ("text", "message", "fix"),
    [
        ("[1]", "a row is not a JSON object", FIX),
        ('{"messages": [{"content": "no role"}]}', "messages must be a non-empty list of {role, content}", FIX),
        ('{"messages": [{"role": "user"}]}', "messages must be a non-empty list of {role, content}", FIX),
        ('{"prompt": "a"}', "a row has neither messages nor conversations", FIX),
        ('{"conversations": [{"from": "gpt", "value": "hi"}]}', "a ShareGPT conversation has no human turn", FIX),
        ('{"conversations": ["x"]}', "a ShareGPT turn is not understood: x", None),
        ('{"conversations": [{"from": "human", "value": 3}]}', "a ShareGPT turn is not understood: ", None),
        (
            '{"messages": [{"role": "user", "content": "a"}], "max_tokens": "9"}',
            "max_tokens '9' is not a positive whole number",
            None,
        ),
    ],
)
def test_each_bad_row_says_exactly_what_is_wrong_and_how_to_fix_it(
    tmp_path: Path, text: str, message: str, fix: str | None
) -> None:
    path = write(tmp_path / "d.jsonl", text + "\n")
    with pytest.raises(InputError) as caught:
        load_dataset(path)
    error = caught.value
    assert error.message.startswith(message) and error.key == "--dataset" and error.fix == fix
    assert error.where == (f"{path} entry 1" if text.startswith("[") else f"{path}:1")


def test_unreadable_and_broken_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_dataset(tmp_path / "missing.jsonl")
    assert caught.value.message.startswith("cannot read the dataset: ") and caught.value.where == str(
        tmp_path / "missing.jsonl"
    ) and caught.value.key == "--dataset"  # fmt: skip
    broken = write(tmp_path / "b.json", "  [1, ")
    with pytest.raises(InputError) as caught:
        load_dataset(broken)
    assert caught.value.message.startswith("not JSON: ") and caught.value.where == str(broken)
    assert caught.value.key == "--dataset"
    empty = write(tmp_path / "e.jsonl", "\n")
    with pytest.raises(InputError) as caught:
        load_dataset(empty)
    assert (caught.value.message, caught.value.fix, caught.value.where) == (
        "the dataset holds no rows", "one chat request per line", str(empty),
    )  # fmt: skip


def test_max_completion_tokens_counts_one_is_allowed_and_a_leading_reply_stays_in_the_prompt(tmp_path: Path) -> None:
    rows = load_dataset(
        write(
            tmp_path / "d.jsonl",
            '{"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 4}\n'
            '{"messages": [{"role": "user", "content": "b"}], "max_tokens": 1}\n'
            '{"conversations": [{"from": "gpt", "value": "Welcome."}, {"from": "human", "value": "hi"},'
            ' {"from": "gpt", "value": "hello"}]}\n',
        )
    )
    assert [r.max_tokens for r in rows] == [4, 1, None]
    assert rows[2].messages == [{"role": "assistant", "content": "Welcome."}, {"role": "user", "content": "hi"}]


async def test_a_first_message_without_text_gets_the_salt_as_a_system_message_and_requests_are_greedy() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    options = BenchOptions(max_tokens=20, ignore_eos=False)
    async with OpenAIClient("http://127.0.0.1:9/v1") as client:
        [(_, request)] = await cell_requests(
            client, 1, model="m", options=options, run="r", dataset=[DatasetRow(parts)]
        )
    assert request.messages == [{"role": "system", "content": "[request r-0]"}, *parts]
    assert (request.model, request.max_tokens, request.temperature) == ("m", 20, 0.0)
    assert request.extra == {"chat_template_kwargs": {"thinking": False, "enable_thinking": False}}
