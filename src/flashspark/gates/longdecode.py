"""The long-decode gate (`flashspark longdecode`): long generations at the profile's live concurrency,
every garble detector applied to each window of tokens.

Short probes pass while a reply can still go bad deep into a long one (garble after ~12,000
generated tokens: spark-vllm-docker#349). Each stream is asked for at least the profile's
`gates.longdecode_tokens` (`min_tokens` keeps the engine from stopping early) with cumulative usage
in every chunk (`continuous_usage_stats`), so the text can be cut at exact token positions. The
report names, per stream, the first window whose text fires a detector: where the damage starts,
not only that it happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import ChatRequest, ChatResult, OpenAIClient
from flashspark.files import append_line, write_json
from flashspark.gates import garble

LONGDECODE_SCHEMA_VERSION = 1

TOPICS = (
    "how a city's water system works, from the reservoirs to the taps",
    "how a railway timetable is planned for a whole country",
    "how a large library catalogues, stores and lends its books",
    "how a wind farm is planned, built and kept running",
    "how a hospital emergency department organises a busy night",
    "how a container port moves goods from ships to trucks",
    "how a weather service turns measurements into a forecast",
    "how a bakery plans and bakes bread for a whole town",
)


def prompt_for(index: int) -> str:
    topic = TOPICS[index % len(TOPICS)]
    return (
        f"Write a long, detailed technical essay in English about {topic}. Use many paragraphs, "
        "give concrete examples and numbers, never repeat a sentence, and keep writing until you are stopped."
    )


class Window(BaseModel):
    """Tokens [first_token, end_token) of one reply and the characters they produced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    first_token: int
    end_token: int
    start_char: int
    end_char: int


def cut_windows(
    text_chars: int, marks: list[tuple[int, int]], completion_tokens: int, window_tokens: int
) -> tuple[list[Window], bool]:
    """Windows of `window_tokens` tokens over a reply, and whether their character bounds are estimated.

    `marks` are (characters so far, tokens so far) at each chunk (ascending). A boundary at token t
    falls at the characters of the first chunk that reached t: a chunk of several tokens (speculative
    decoding) cannot be split, so a window may hold a few tokens of the next. Without marks (a server
    that sends no cumulative usage) the bounds are proportional to the text: estimated.
    """
    if completion_tokens <= 0 or window_tokens <= 0:
        return [], not marks
    estimated = not marks
    windows = []
    start_char = 0
    for index, first in enumerate(range(0, completion_tokens, window_tokens)):
        end = min(first + window_tokens, completion_tokens)
        if end >= completion_tokens:
            end_char = text_chars
        elif estimated:
            end_char = round(text_chars * end / completion_tokens)
        else:
            end_char = next((chars for chars, tokens in marks if tokens >= end), text_chars)
        end_char = max(end_char, start_char)
        windows.append(Window(index=index, first_token=first, end_token=end, start_char=start_char, end_char=end_char))
        start_char = end_char
    return windows, estimated


class BadWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: Window
    hits: list[dict[str, str]]
    sample: str


class StreamVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    ok: bool
    problems: list[str] = Field(default_factory=list)
    completion_tokens: int | None
    finish_reason: str | None
    windows: int
    positions_estimated: bool
    first_bad: BadWindow | None = None
    bad_windows: int = 0
    ttft_s: float | None
    e2e_s: float | None
    decode_tokens_per_s: float | None
    error: str | None = None


class LongDecodeReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = LONGDECODE_SCHEMA_VERSION
    ok: bool
    model: str | None
    tokens: int
    concurrency: int
    window_tokens: int
    wall_s: float
    aggregate_tokens_per_s: float
    streams: list[StreamVerdict]

    @property
    def summary(self) -> str:
        good = sum(s.ok for s in self.streams)
        parts = [f"{good}/{len(self.streams)} clean to {self.tokens} tokens at c{self.concurrency}"]
        for stream in self.streams:
            if stream.first_bad is not None:
                w = stream.first_bad.window
                fired = ",".join(h["detector"] for h in stream.first_bad.hits)
                parts.append(f"stream {stream.index}: first bad window tokens {w.first_token}-{w.end_token} ({fired})")
            elif not stream.ok:
                parts.append(f"stream {stream.index}: {'; '.join(stream.problems)}")
        return "; ".join(parts)


async def run_longdecode(
    client: OpenAIClient,
    *,
    tokens: int,
    concurrency: int,
    window_tokens: int,
    model: str | None = None,
    strict_cjk: bool = False,
    evidence_path: Path | None = None,
    report_path: Path | None = None,
    on_stream: Callable[[StreamVerdict], None] | None = None,
) -> LongDecodeReport:
    """`concurrency` long generations at once, each judged window by window; the report is also written
    to `report_path` (longdecode.json) when given."""
    model = model or await client.default_model()
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(index: int) -> tuple[StreamVerdict, ChatResult]:
        result = await client.stream_chat(_request(index, model, tokens))
        verdict = judge(index, result, tokens=tokens, window_tokens=window_tokens, strict_cjk=strict_cjk)
        if evidence_path is not None:
            _record(evidence_path, verdict, result)
        if on_stream is not None:
            on_stream(verdict)
        return verdict, result

    outcomes = await asyncio.gather(*(one(i) for i in range(concurrency)))
    wall = loop.time() - started
    streams = [verdict for verdict, _ in outcomes]
    generated = sum(result.completion_tokens or 0 for _, result in outcomes)
    report = LongDecodeReport(
        ok=all(s.ok for s in streams),
        model=model,
        tokens=tokens,
        concurrency=concurrency,
        window_tokens=window_tokens,
        wall_s=round(wall, 3),
        aggregate_tokens_per_s=round(generated / wall, 2) if wall > 0 else 0.0,
        streams=streams,
    )
    if report_path is not None:
        write_json(report_path, report.model_dump(mode="json"))
    return report


def _request(index: int, model: str | None, tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=[{"role": "user", "content": prompt_for(index)}],
        model=model,
        max_tokens=tokens,
        temperature=0.0,
        extra={"min_tokens": tokens, "stream_options": {"include_usage": True, "continuous_usage_stats": True}},
    )


def judge(
    index: int, result: ChatResult, *, tokens: int, window_tokens: int, strict_cjk: bool = False
) -> StreamVerdict:
    """One long reply: complete, as long as asked, and every window clean."""
    problems = []
    if not result.ok:
        problems.append(f"{result.error_kind}: {result.error}")
    generated = result.completion_tokens or 0
    if result.ok and generated < tokens:
        problems.append(f"{generated} tokens, fewer than the {tokens} asked for (finish {result.finish_reason!r})")
    problems += [
        f"{hit.detector}: {hit.detail}"
        for hit in garble.empty_with_tokens(result.content, result.completion_tokens, bool(result.tool_calls))
    ]
    windows, estimated = cut_windows(len(result.content), result.token_marks, generated, window_tokens)
    bad: list[BadWindow] = []
    for window in windows:
        text = result.content[window.start_char : window.end_char]
        hits = garble.text_detectors(text, strict_cjk=strict_cjk)
        if hits:
            bad.append(
                BadWindow(
                    window=window, hits=[{"detector": h.detector, "detail": h.detail} for h in hits], sample=text[:300]
                )
            )
    return StreamVerdict(
        index=index,
        ok=not problems and not bad,
        problems=problems,
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason,
        windows=len(windows),
        positions_estimated=estimated,
        first_bad=bad[0] if bad else None,
        bad_windows=len(bad),
        ttft_s=result.ttft_s,
        e2e_s=result.e2e_s,
        decode_tokens_per_s=result.decode_tokens_per_s,
        error=result.error,
    )


def _record(path: Path, verdict: StreamVerdict, result: ChatResult) -> None:
    """One JSONL line per stream, written as it finishes: the verdict and the whole reply."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {**verdict.model_dump(mode="json"), "content": result.content}
    with open(path, "a", encoding="utf-8") as handle:
        append_line(handle, json.dumps(entry))
