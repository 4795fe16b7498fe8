"""Who counts a prompt's tokens for exact-length prompts: the server, else the model's tokenizer files.

vLLM's POST /tokenize counts a chat prompt exactly as the server will bill it (its tokenizer, its
chat template, the generation prompt). A server without it answers 404; then the tokenizer files
given with `--tokenizer DIR` count instead (`engine.tokens.TokenizerFiles`, handed in by the CLI as
a plain counting function), and without them the error says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flashspark.client import OpenAIClient
from flashspark.errors import ClientError, HTTPStatusError

Counter = Callable[[list[dict[str, Any]]], Awaitable[int]]


def server_counter(client: OpenAIClient, model: str | None, files: Counter | None = None) -> Counter:
    """Count with the server's /tokenize; on its 404, with `files` from then on (or fail saying how)."""
    fallback: list[Counter] = []

    async def count(messages: list[dict[str, Any]]) -> int:
        if fallback:
            return await fallback[0](messages)
        try:
            return await client.tokenize(messages, model=model)
        except HTTPStatusError as exc:
            if exc.status_code != 404:
                raise
            if files is None:
                raise ClientError(
                    f"{exc.message}: this server cannot count tokens",
                    where=f"{client.root}/tokenize",
                    fix="give the model's tokenizer files with --tokenizer DIR (counted by the engine's transformers)",
                ) from None
            fallback.append(files)
            return await files(messages)

    return count
