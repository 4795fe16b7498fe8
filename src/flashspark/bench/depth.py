"""`flashspark bench depth`: time to first token, prefill rate and decode rate against context depth.

Prefill is what collapses at depth (MiaAI: TTFT 0.63 s at 256 tokens, 23 s at 32K, 79 s at 128K,
1,029 s for 900K), and a prompt of "about N tokens" hides where. Each point of the ladder is a chat
prompt of exactly N tokens as the server counts them (vLLM's /tokenize with the chat template), led
by a salt unique to the run, the depth and the repeat, so no prefix-cache block is shared and every
prefill is cold; the /metrics prefix-cache counters are read around each request to show it. The
points run one at a time (a point is a latency, not a throughput). The ladder is capped at the
context the server serves: a depth past `max_model_len - output_tokens` becomes one point at the cap.

Writes depth.json (versioned, with the resolved recipe and pins) into the run directory and one
JSONL line per request as it finishes.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.bench.options import DEPTH_OUTPUT_TOKENS, DEPTH_REPEATS
from flashspark.bench.tokens import Counter, server_counter
from flashspark.client import ChatRequest, OpenAIClient, parse_metrics
from flashspark.client.metrics import PREFIX_HITS, PREFIX_QUERIES
from flashspark.errors import ClientError, InputError
from flashspark.files import append_line, read_model, write_json
from flashspark.gates.prompts import WORDS
from flashspark.pins import Pins

DEPTH_SCHEMA_VERSION = 1
_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
_FILLER_WORDS = WORDS  # the gates' salt vocabulary: plain words, about one token each
QUESTION = "Summarise the records above in one sentence."


def parse_contexts(text: str) -> tuple[int, ...]:
    """`1k,8k,32k,1m` -> token counts (k = 1024, m = 1024 x 1024), ascending, duplicates dropped."""
    depths = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        number, unit = (part[:-1], part[-1]) if part[-1] in _UNITS else (part, "")
        try:
            value = float(number) * _UNITS[unit]
        except ValueError:
            raise InputError(
                f"{part!r} is not a context depth", key="--contexts", value=text, fix="write depths like 1k,8k,32k,1m"
            ) from None
        if value < 1 or value != int(value):
            raise InputError(f"{part!r} is not a whole number of tokens", key="--contexts", value=text)
        depths.add(int(value))
    if not depths:
        raise InputError("no context depths given", key="--contexts", value=text, fix="write depths like 1k,8k")
    return tuple(sorted(depths))


def capped_ladder(depths: tuple[int, ...], max_model_len: int | None, output_tokens: int) -> tuple[list[int], str]:
    """The depths that fit beside the output, plus one point at the cap when some did not; and a note."""
    if max_model_len is None:
        return list(depths), ""
    cap = max_model_len - output_tokens
    if cap < 1:
        raise InputError(
            f"max_model_len {max_model_len} leaves no room for a prompt beside {output_tokens} output tokens",
            key="--output-tokens",
            fix="ask for fewer output tokens",
        )
    kept = [d for d in depths if d <= cap]
    over = [d for d in depths if d > cap]
    if not over:
        return kept, ""
    if cap not in kept:
        kept.append(cap)
    note = f"{', '.join(map(str, over))} capped to {cap:,} (max_model_len {max_model_len:,} - {output_tokens} output)"
    return kept, note


def filler(count: int) -> str:
    """`count` numbered records of plain words: varied enough that nothing compresses into few tokens."""
    lines = []
    for i in range(count):
        words = [_FILLER_WORDS[(i * 7 + j * 13) % len(_FILLER_WORDS)] for j in range(6)]
        lines.append(f"Record {i}: {' '.join(words)} {(i * 7919) % 10000}.")
    return "\n".join(lines)


def messages_for(salt: str, records: int, pad: int) -> list[dict[str, Any]]:
    body = f"{salt}\n{filler(records)}" + " ok" * pad
    return [{"role": "user", "content": f"{body}\n{QUESTION}"}]


async def exact_prompt(
    client: OpenAIClient, target: int, salt: str, model: str | None, counter: Counter | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Messages whose prompt is `target` tokens on this server, and the count /tokenize gives for them
    (`counter`: who counts instead, see `bench.tokens`).

    Records are added to get just under the target (each guess checked with /tokenize, the next one
    estimated from the tokens per record), then " ok" words, one token each in most tokenizers, to
    land on it. A tokenizer that cannot land exactly ends at the nearest count it reached.
    """

    tokens_of = counter or server_counter(client, model)

    async def count(records: int, pad: int = 0) -> int:
        return await tokens_of(messages_for(salt, records, pad))

    base = await count(0)
    if base > target:
        raise InputError(f"the chat template alone is {base} tokens, more than the depth {target}", key="--contexts")
    probe = max(1, min(64, target // 16))
    per_record = max(1.0, (await count(probe) - base) / probe)
    fits, fits_count, too_many = 0, base, None  # most records known to fit; fewest known not to
    guess = max(1, int((target - base) / per_record))
    for _ in range(40):
        tokens = await count(guess)
        if tokens <= target:
            fits, fits_count = guess, tokens
        else:
            too_many = guess
        if fits_count == target or (too_many is not None and too_many - fits <= 1):
            break
        guess = fits + max(1, int((target - fits_count) / per_record))
        if too_many is not None:
            guess = min(guess, too_many - 1)
    pad, tokens = 0, fits_count  # `tokens` is always the count of (fits, pad)
    for _ in range(8):
        wanted = max(0, pad + target - tokens)
        if tokens == target or wanted == pad:
            break
        pad = wanted
        tokens = await count(fits, pad)
    return messages_for(salt, fits, pad), tokens


class DepthPoint(BaseModel):
    """One request at one depth."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(description="Asked-for prompt tokens.")
    repeat: int
    prompt_tokens: int | None = Field(description="What the server billed (usage.prompt_tokens).")
    tokenized: int = Field(description="What /tokenize counted for the prompt sent.")
    ok: bool
    error: str | None = None
    ttft_s: float | None = None
    prefill_tokens_per_s: float | None = Field(default=None, description="prompt_tokens / TTFT: cold prefill rate.")
    decode_tokens_per_s: float | None = Field(default=None, description="(N - 1) / (t_last - t_first) at this depth.")
    completion_tokens: int | None = None
    e2e_s: float | None = None
    prefix_cache_hit_tokens: float | None = Field(
        default=None, description="Prefix-cache hits (tokens) during this request, from /metrics: 0 when cold."
    )


class DepthRow(BaseModel):
    """The medians of one depth's repeats."""

    model_config = ConfigDict(extra="forbid")

    depth: int
    prompt_tokens: int | None
    requests: int
    ok: int
    ttft_s: float | None
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None


class DepthResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = DEPTH_SCHEMA_VERSION
    kind: str = "depth"
    created_at: str
    base_url: str
    model: str
    max_model_len: int | None
    output_tokens: int
    repeats: int
    ladder: list[int]
    capped: str = ""
    rows: list[DepthRow]
    points: list[DepthPoint]
    pins: Pins
    recipe: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(row.ok == row.requests for row in self.rows)


async def run_depth(
    client: OpenAIClient,
    *,
    depths: tuple[int, ...],
    run_dir: Path,
    model: str | None = None,
    output_tokens: int = DEPTH_OUTPUT_TOKENS,
    repeats: int = DEPTH_REPEATS,
    max_model_len: int | None = None,
    recipe: dict[str, Any] | None = None,
    pins: Pins | None = None,
    on_point: Callable[[DepthPoint], None] | None = None,
    tokenizer: Counter | None = None,
) -> DepthResults:
    """Run the ladder, one request at a time, and write depth.json (rewritten after every depth)."""
    served = model or await client.default_model()
    if max_model_len is None:
        entry = next((m for m in await client.models() if m.id == served), None)
        max_model_len = entry.max_model_len if entry is not None else None
    ladder, capped = capped_ladder(depths, max_model_len, output_tokens)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    points: list[DepthPoint] = []
    all_pins = Pins(vllm_version=await client.version(), served_model=served).under(pins)
    counter = server_counter(client, served, tokenizer)

    def results() -> DepthResults:
        return DepthResults(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            base_url=client.api,
            model=served,
            max_model_len=max_model_len,
            output_tokens=output_tokens,
            repeats=repeats,
            ladder=ladder,
            capped=capped,
            rows=[_row(depth, [p for p in points if p.depth == depth]) for depth in ladder if _has(points, depth)],
            points=points,
            pins=all_pins,
            recipe=recipe,
        )

    for depth in ladder:
        for repeat in range(repeats):
            point = await _one(
                client, served, depth, repeat, f"Run {run_id}, depth {depth}, pass {repeat}.", output_tokens, counter
            )
            points.append(point)
            with open(run_dir / "depth.jsonl", "a", encoding="utf-8") as handle:
                append_line(handle, point.model_dump_json())
            if on_point is not None:
                on_point(point)
        write_json(run_dir / "depth.json", results().model_dump(mode="json"))
    final = results()
    write_json(run_dir / "depth.json", final.model_dump(mode="json"))
    return final


def _has(points: list[DepthPoint], depth: int) -> bool:
    return any(p.depth == depth for p in points)


async def _one(
    client: OpenAIClient, model: str, depth: int, repeat: int, salt: str, output_tokens: int, counter: Counter
) -> DepthPoint:
    try:
        messages, tokenized = await exact_prompt(client, depth, salt, model, counter)
    except ClientError as exc:
        return DepthPoint(depth=depth, repeat=repeat, prompt_tokens=None, tokenized=0, ok=False, error=str(exc))
    before = await _prefix_hits(client)
    result = await client.stream_chat(
        ChatRequest(
            messages=messages,
            model=model,
            max_tokens=output_tokens,
            temperature=0.0,
            extra={"min_tokens": output_tokens},
        )
    )
    after = await _prefix_hits(client)
    prompt_tokens = result.prompt_tokens
    prefill = prompt_tokens / result.ttft_s if result.ok and prompt_tokens and result.ttft_s else None
    return DepthPoint(
        depth=depth,
        repeat=repeat,
        prompt_tokens=prompt_tokens,
        tokenized=tokenized,
        ok=result.ok,
        error=result.error,
        ttft_s=result.ttft_s,
        prefill_tokens_per_s=round(prefill, 1) if prefill is not None else None,
        decode_tokens_per_s=result.decode_tokens_per_s,
        completion_tokens=result.completion_tokens,
        e2e_s=result.e2e_s,
        prefix_cache_hit_tokens=after - before if before is not None and after is not None else None,
    )


async def _prefix_hits(client: OpenAIClient) -> float | None:
    """vLLM's prefix-cache hit counter (tokens), None where the server has no /metrics."""
    try:
        snapshot = parse_metrics(await client.metrics_text())
    except ClientError:
        return None
    return snapshot.counter(PREFIX_HITS) if snapshot.counter(PREFIX_QUERIES) or snapshot.counter(PREFIX_HITS) else 0.0


def median_of_present(values: list[float | None]) -> float | None:
    """The median of the values that are there, to 4 digits; None when none is."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def _row(depth: int, points: list[DepthPoint]) -> DepthRow:
    billed = [p.prompt_tokens for p in points if p.prompt_tokens is not None]
    return DepthRow(
        depth=depth,
        prompt_tokens=billed[0] if billed else None,
        requests=len(points),
        ok=sum(p.ok for p in points),
        ttft_s=median_of_present([p.ttft_s for p in points]),
        prefill_tokens_per_s=median_of_present([p.prefill_tokens_per_s for p in points]),
        decode_tokens_per_s=median_of_present([p.decode_tokens_per_s for p in points]),
    )


def read_depth(run_dir: Path) -> DepthResults:
    return read_model(
        run_dir / "depth.json",
        DepthResults,
        what="a FlashSpark depth run",
        fix="point at a run directory written by `flashspark bench depth`",
    )


__all__ = ["DepthResults", "capped_ladder", "exact_prompt", "parse_contexts", "run_depth"]
