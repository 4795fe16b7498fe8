"""What a benchmark sends: the built-in prompt categories, exact-length prompts, or a dataset.

Three sources, one shape out (a category label and a ChatRequest per request index):
- categories (the default): `bench.prompts`, salted per request;
- `--input-tokens N`: every prompt exactly N tokens as the server counts them (POST /tokenize,
  the chat template applied), salted first so no two share a cached block (`bench.depth`);
- `--dataset FILE`: a JSONL of chat requests (`{"messages": [...], "max_tokens": 200}` per line,
  as `flashspark record` and most tools write them) or a ShareGPT file (a JSON array or JSONL of
  `{"conversations": [{"from": "human", "value": ...}, ...]}`: the turns before the first reply
  are the prompt). Rows are used in order, cycling; a row's own max_tokens wins over --max-tokens.
  The salt leads the first message, so the prefix cache cannot flatter a repeated row.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashspark.bench.depth import exact_prompt
from flashspark.bench.options import BenchOptions
from flashspark.bench.prompts import bench_messages, salt_line
from flashspark.bench.tokens import Counter, server_counter
from flashspark.client import ChatRequest, OpenAIClient, thinking_off
from flashspark.errors import InputError

# ShareGPT speaker names -> chat roles.
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "system": "system", "assistant": "assistant"}


@dataclass(frozen=True)
class DatasetRow:
    messages: list[dict[str, Any]]
    max_tokens: int | None = None


def load_dataset(path: Path) -> list[DatasetRow]:
    """Read a JSONL of chat requests or a ShareGPT file (array or JSONL); every bad row names its place."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the dataset: {exc}", key="--dataset", where=str(path)) from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            entries = list(enumerate(json.loads(stripped), 1))
        except ValueError as exc:
            raise InputError(f"not JSON: {exc}", key="--dataset", where=str(path)) from None
        label = "entry"
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append((number, json.loads(line)))
                except ValueError as exc:
                    raise InputError(
                        f"line {number} is not JSON: {exc}", key="--dataset", where=f"{path}:{number}"
                    ) from None
        label = "line"
    rows = [
        _row(entry, f"{path}:{number}" if label == "line" else f"{path} entry {number}") for number, entry in entries
    ]
    if not rows:
        raise InputError("the dataset holds no rows", key="--dataset", where=str(path), fix="one chat request per line")
    return rows


def _row(entry: Any, where: str) -> DatasetRow:
    fix = 'each row is {"messages": [{"role": ..., "content": ...}]} or ShareGPT {"conversations": [...]}'
    if not isinstance(entry, dict):
        raise InputError("a row is not a JSON object", key="--dataset", where=where, fix=fix)
    if "messages" in entry:
        messages = entry["messages"]
        if not isinstance(messages, list) or not messages or not all(_is_message(m) for m in messages):
            raise InputError(
                "messages must be a non-empty list of {role, content}", key="--dataset", where=where, fix=fix
            )
        max_tokens = entry.get("max_tokens", entry.get("max_completion_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InputError(f"max_tokens {max_tokens!r} is not a positive whole number", key="--dataset", where=where)
        return DatasetRow([dict(m) for m in messages], max_tokens)
    if "conversations" in entry and isinstance(entry["conversations"], list):
        prompt: list[dict[str, Any]] = []
        for turn in entry["conversations"]:
            role = _SHAREGPT_ROLES.get(str(turn.get("from", ""))) if isinstance(turn, dict) else None
            if role is None or not isinstance(turn.get("value"), str):
                raise InputError(f"a ShareGPT turn is not understood: {str(turn)[:80]}", key="--dataset", where=where)
            if role == "assistant" and any(m["role"] == "user" for m in prompt):
                break  # the prompt is everything before the first reply
            prompt.append({"role": role, "content": turn["value"]})
        if not any(m["role"] == "user" for m in prompt):
            raise InputError("a ShareGPT conversation has no human turn", key="--dataset", where=where, fix=fix)
        return DatasetRow(prompt)
    raise InputError("a row has neither messages nor conversations", key="--dataset", where=where, fix=fix)


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str) and "content" in value


def _salted(messages: list[dict[str, Any]], salt: str) -> list[dict[str, Any]]:
    first, *rest = messages
    content = first.get("content")
    if isinstance(content, str):
        return [{**first, "content": f"{salt} {content}"}, *rest]
    return [{"role": "system", "content": salt}, *messages]


def bench_request(
    messages: list[dict[str, Any]], model: str, options: BenchOptions, max_tokens: int | None
) -> ChatRequest:
    extra = thinking_off()
    if options.ignore_eos:
        extra["ignore_eos"] = True
    extra.update(options.extra_body)
    return ChatRequest(
        model=model, messages=messages, max_tokens=max_tokens or options.max_tokens, temperature=0.0, extra=extra
    )


async def cell_requests(
    client: OpenAIClient,
    count: int,
    *,
    model: str,
    options: BenchOptions,
    run: str,
    dataset: list[DatasetRow] | None = None,
    tokenizer: Counter | None = None,
) -> list[tuple[str, ChatRequest]]:
    """The (category, request) of each of `count` requests, all built before the cell is released."""
    if options.input_tokens is not None:
        target = options.input_tokens
        counter = server_counter(client, model, tokenizer)
        made = await asyncio.gather(
            *(exact_prompt(client, target, salt_line(run, index), model, counter) for index in range(count))
        )
        return [(f"in{target}", bench_request(messages, model, options, None)) for messages, _ in made]
    if dataset is not None:
        rows = [dataset[index % len(dataset)] for index in range(count)]
        return [
            ("dataset", bench_request(_salted(row.messages, salt_line(run, index)), model, options, row.max_tokens))
            for index, row in enumerate(rows)
        ]
    categories = [options.categories[i % len(options.categories)] for i in range(count)]
    return [
        (category, bench_request(bench_messages(category, run=run, index=index), model, options, None))
        for index, category in enumerate(categories)
    ]
