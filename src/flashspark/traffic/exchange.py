"""One recorded exchange between a harness and a server, as it is written to JSONL and read back for replay."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flashspark.errors import InputError
from flashspark.gates.answer import Verdict
from flashspark.redact import CREDENTIAL_HEADERS, MIN_EXACT, found_secrets, redact, redact_data
from flashspark.secrets import is_secret_name

EXCHANGE_SCHEMA_VERSION = 1


def request_secrets(headers: dict[str, str], body: bytes) -> set[str]:
    """Every secret a request shows: credential headers (with and without their scheme) and, in its
    JSON body, secret-named keys' values and secret-shaped strings. The whole exchange is masked of
    them, its answer included: a model may echo a key it was shown."""
    secrets: set[str] = set()
    for name, value in headers.items():
        if name.lower() in CREDENTIAL_HEADERS or is_secret_name(name):
            secrets |= {value, value.partition(" ")[2]}
    try:
        secrets |= found_secrets(json.loads(body)) if body else set()
    except ValueError:
        secrets |= found_secrets(body.decode("utf-8", errors="replace"))
    return {s for s in secrets if len(s) >= MIN_EXACT}


def recorded_body(body: bytes, limit: int) -> Any:
    """A request body as recorded: JSON with secret-named keys and secret-shaped strings masked, else text."""
    try:
        return redact_data(json.loads(body))
    except ValueError:
        text = body[:limit].decode("utf-8", errors="replace")
        return redact(text) + (f"... ({len(body) - limit} more bytes)" if len(body) > limit else "")


class LatencyStats(BaseModel):
    """What the proxy added per chunk: from the chunk's read off the upstream socket to its write to the harness."""

    model_config = ConfigDict(extra="forbid")

    chunks: int
    p50_us: float
    p99_us: float
    max_us: float

    @classmethod
    def of(cls, nanoseconds: list[int]) -> LatencyStats | None:
        if not nanoseconds:
            return None
        ordered = sorted(nanoseconds)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return cls(
            chunks=len(ordered),
            p50_us=round(statistics.median(ordered) / 1000, 1),
            p99_us=round(p99 / 1000, 1),
            max_us=round(ordered[-1] / 1000, 1),
        )


class Exchange(BaseModel):
    """One request and its answer, with the answer reconstructed (content, reasoning, tool calls) and judged."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = EXCHANGE_SCHEMA_VERSION
    id: str
    started_at: str
    offset_s: float = Field(description="Seconds from the recording's start: the original timing for replay.")
    method: str
    path: str
    request_headers: dict[str, str]
    request: Any = Field(description="The JSON body, secrets masked (a body that is not JSON: its text).")
    status: int | None = None
    stream: bool = False
    error: str | None = None
    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttfb_s: float | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    response_bytes: int = 0
    added_latency: LatencyStats | None = None
    verdict: Verdict | None = Field(default=None, description="For chat completions: the answer scoring.")
    flags: list[dict[str, str]] = Field(default_factory=list, description="Detector hits: {detector, detail}.")

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path.split("?")[0].endswith("/chat/completions")

    @property
    def flagged(self) -> bool:
        return bool(self.flags) or self.verdict in ("garbled", "suspicious")


def read_exchanges(path: Path) -> list[Exchange]:
    """The exchanges of a recording (exchanges.jsonl or flagged.jsonl), in order; a bad line is named."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", where=str(path)) from None
    exchanges = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            exchanges.append(Exchange.model_validate_json(line))
        except ValidationError as exc:
            raise InputError(
                f"line {number} is not a recorded exchange: {exc.errors()[0]['msg']}",
                where=f"{path}:{number}",
                fix="give a file written by `flashspark record` (exchanges.jsonl or flagged.jsonl)",
            ) from None
    return exchanges
