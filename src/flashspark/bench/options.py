"""What a benchmark run is asked for: the one home of every bench default (the CLI reads them here)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from flashspark.redact import redact_headers

CATEGORIES = ("code", "agent", "spec_copy", "prose")


class BenchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, description="Model id; None: the first the server lists.")
    categories: tuple[str, ...] = Field(default=("code",), description=f"Prompt categories: {', '.join(CATEGORIES)}.")
    max_tokens: int = Field(default=128, ge=1)
    warmup_requests: int = Field(default=2, ge=0, description="Warm-up requests per category per cell.")
    rounds: int = Field(default=1, ge=1, le=20, description="Rounds per level.")
    ignore_eos: bool = Field(default=True, description="Fixed-length replies (EOS ignored).")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Merged into every request body.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request (credentials masked).")
    processes: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        default=1,
        description="Client processes per cell (bench/workers.py); 'auto': from the offered chunk rate "
        "(bench/autoscale.py).",
    )
    input_tokens: int | None = Field(
        default=None, ge=1, description="Every prompt exactly this many tokens, as the server's /tokenize counts."
    )
    dataset: str | None = Field(default=None, description="A JSONL of chat requests or a ShareGPT file.")
    calibrate: bool = Field(
        default=True, description="Measure the client's own timing error at each cell's stream count first."
    )
    max_client_error_ms: float = Field(
        default=5.0, gt=0, description="A cell whose calibrated client error (p99) passes this is client_limited."
    )
    max_dispatch_lateness_ms: float = Field(
        default=5.0,
        gt=0,
        description="A cell whose requests leave this late (p99, past their schedule, cap waits aside) is "
        "client_limited.",
    )

    @model_validator(mode="after")
    def _auto_needs_its_inputs(self) -> BenchOptions:
        # auto divides the warm-up's offered chunk rate by the calibration's capacity: both must run.
        if self.processes == "auto" and (not self.calibrate or self.warmup_requests < 1):
            raise ValueError("--processes auto needs the calibration and at least one warm-up request")
        return self

    @field_serializer("headers")
    def _masked(self, headers: dict[str, str]) -> dict[str, str]:
        return redact_headers(headers)  # results.json carries the options: never a credential


DEFAULTS = BenchOptions()

# `bench depth`: the ladder (k = 1024, m = 1024 x 1024; capped at the server's max_model_len), the
# decode per point and the requests per depth.
DEPTH_CONTEXTS = "1k,2k,4k,8k,32k,128k,512k,1m"
DEPTH_OUTPUT_TOKENS = 64
DEPTH_REPEATS = 1


class SessionShape(BaseModel):
    """`bench sessions`: what one simulated agent fleet looks like. Token counts are plain words, about
    one token each; what the server billed is in the results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: int = Field(default=4, ge=1, le=1024, description="Concurrent agents, each its own conversation.")
    turns: int = Field(default=6, ge=1, le=1000, description="Requests per agent; the context grows every turn.")
    system_tokens: int = Field(default=1024, ge=0, description="The system prompt every agent shares.")
    task_tokens: int = Field(default=128, ge=0, description="Each agent's own first message.")
    growth_tokens: int = Field(default=512, ge=0, description="The tool result appended after every turn.")
    output_tokens: int = Field(default=128, ge=1, description="Decode per turn (fixed: min_tokens = max_tokens).")
    think_time_s: float = Field(default=0.0, ge=0, description="Pause between one turn's end and the next.")


SESSION_SHAPE = SessionShape()
