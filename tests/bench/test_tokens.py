"""Who counts exact-length prompts: the server's /tokenize, then the tokenizer files on its 404, else an
error that says how to fix it."""

from __future__ import annotations

from typing import Any

import pytest

from flashspark.bench.depth import exact_prompt
from flashspark.bench.tokens import server_counter
from flashspark.client import OpenAIClient
from flashspark.errors import ClientError, HTTPStatusError
from tests.standin import StandIn


class Files:
    """A tokenizer-files counter: one token a word and a template of 9 (the stand-in's server says 5)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, messages: list[dict[str, Any]]) -> int:
        self.calls += 1
        return 9 + sum(len(str(m["content"]).split()) for m in messages)


async def test_the_server_counts_while_it_can() -> None:
    files = Files()
    with StandIn() as server:
        async with OpenAIClient(server.url) as client:
            count = server_counter(client, "standin", files)
            assert await count([{"role": "user", "content": "a b c"}]) == 3 + server.template_tokens
    assert files.calls == 0


async def test_on_a_404_the_files_count_from_then_on() -> None:
    files = Files()
    with StandIn() as server:
        server.tokenizes = False
        async with OpenAIClient(server.url) as client:
            asked: list[int] = []
            real = client.tokenize

            async def tokenize(messages: list[dict[str, Any]], *, model: str | None = None) -> int:
                asked.append(1)
                return await real(messages, model=model)

            client.tokenize = tokenize  # type: ignore[method-assign]
            count = server_counter(client, "standin", files)
            assert await count([{"role": "user", "content": "a b c"}]) == 12
            assert await count([{"role": "user", "content": "a"}]) == 10
            messages, tokens = await exact_prompt(client, 100, "salt", "standin", count)
    assert len(asked) == 1 and files.calls > 3  # the server was asked once; after its 404 only the files
    assert tokens == 100 == 9 + len(messages[0]["content"].split())


async def test_without_files_a_404_says_to_give_them() -> None:
    with StandIn() as server:
        server.tokenizes = False
        async with OpenAIClient(server.url) as client:
            count = server_counter(client, "standin")
            with pytest.raises(ClientError) as caught:
                await count([{"role": "user", "content": "a"}])
    assert "cannot count tokens" in caught.value.message and "--tokenizer DIR" in (caught.value.fix or "")


async def test_other_failures_are_not_hidden_by_the_files() -> None:
    files = Files()
    with StandIn() as server:
        server.tokenizes = False
        async with OpenAIClient(server.url) as client:

            async def broken(messages: list[dict[str, Any]], *, model: str | None = None) -> int:
                raise HTTPStatusError("POST /tokenize answered 500", status_code=500)

            client.tokenize = broken  # type: ignore[method-assign]
            count = server_counter(client, "standin", files)
            with pytest.raises(HTTPStatusError):
                await count([{"role": "user", "content": "a"}])
    assert files.calls == 0


async def test_a_bench_run_hands_the_files_to_its_cells(tmp_path: Any) -> None:
    from flashspark.bench.options import BenchOptions
    from flashspark.bench.results import ResultsWriter, read_requests
    from flashspark.bench.runner import CellPlan, run_bench
    from tests.standin import stream_reply

    files = Files()
    with StandIn(model="m") as server:
        server.tokenizes = False
        server.default = stream_reply([(0.0, "abc")], completion_tokens=3)
        async with OpenAIClient(server.url) as client:
            await run_bench(
                client,
                [CellPlan("static-c2-r0", "static", [0.0, 0.0], level=2)],
                options=BenchOptions(warmup_requests=1, calibrate=False, input_tokens=40),
                writer=ResultsWriter(tmp_path / "run", meta={}),
                tokenizer=files,
            )
    # every prompt, warm-up and measured, was counted by the files to exactly 40 (9 of template, 31 words)
    assert files.calls > 3 and [r.category for r in read_requests(tmp_path / "run")] == ["in40", "in40"]
    assert all(len(req["messages"][0]["content"].split()) == 31 for req in server.requests if "messages" in req)
